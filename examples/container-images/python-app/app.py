import os
import sys


def handler(event, context):
    return {
        "hello": event.get("name", "world"),
        "python": sys.version.split()[0],
        "request_id": context.aws_request_id,
        "exec_env": os.environ.get("AWS_EXECUTION_ENV"),
    }
