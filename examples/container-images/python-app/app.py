import logging
import os
import sys

logger = logging.getLogger()


def handler(event, context):
    logger.warning("handled %s", event.get("name", "world"))
    return {
        "hello": event.get("name", "world"),
        "python": sys.version.split()[0],
        "request_id": context.aws_request_id,
        "exec_env": os.environ.get("AWS_EXECUTION_ENV"),
        "greeting": os.environ.get("GREETING"),
        "argv": sys.argv,
    }
