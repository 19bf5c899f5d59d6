"""Terraform itself, with HashiCorp's AWS provider, against a node: apply a
configuration of the resources a serverless app declares (22 of them),
plan again with no change, and destroy it. The machine's image has Terraform and the
provider (from a local mirror: the Terraform registry cannot be reached);
on a machine without them this test is skipped, and says so.
test_terraform_calls makes the provider's calls with boto3 everywhere."""

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import ACCOUNT, Server, aws_client, sqs_client

MIRROR = Path("/opt/tf-plugins")
PROVIDER = "5.100.0"

CONFIG = '''
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "PROVIDER" }
  }
}
provider "aws" {
  region                  = "us-east-1"
  access_key              = "KEY"
  secret_key              = "SECRET"
  s3_use_path_style       = true
  skip_metadata_api_check = true
  endpoints {
    sts       = "ENDPOINT"
    lambda    = "ENDPOINT"
    s3        = "ENDPOINT"
    sqs       = "ENDPOINT"
    scheduler = "ENDPOINT"
    logs      = "ENDPOINT"
    ecr       = "ENDPOINT"
    ecs       = "ENDPOINT"
  }
  default_tags {
    tags = { project = "demo" }
  }
}
data "aws_caller_identity" "me" {}
resource "aws_cloudwatch_log_group" "fn" {
  name              = "/aws/lambda/hello"
  retention_in_days = 7
}
resource "aws_lambda_function" "hello" {
  function_name    = "hello"
  runtime          = "python3.11"
  handler          = "app.handler"
  role             = "arn:aws:iam::${data.aws_caller_identity.me.account_id}:role/lambda-role"
  filename         = "fn.zip"
  source_code_hash = filebase64sha256("fn.zip")
  depends_on       = [aws_cloudwatch_log_group.fn]
}
resource "aws_lambda_function_url" "hello" {
  function_name      = aws_lambda_function.hello.function_name
  authorization_type = "NONE"
}
resource "aws_s3_bucket" "uploads" {
  bucket        = "uploads-demo"
  force_destroy = true
}
resource "aws_s3_bucket_public_access_block" "uploads" {
  bucket                  = aws_s3_bucket.uploads.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}
resource "aws_s3_object" "seed" {
  bucket  = aws_s3_bucket.uploads.id
  key     = "seed.txt"
  content = "hello"
}
resource "aws_sqs_queue" "jobs" {
  name = "jobs"
}
resource "aws_lambda_event_source_mapping" "jobs" {
  event_source_arn = aws_sqs_queue.jobs.arn
  function_name    = aws_lambda_function.hello.arn
}
resource "aws_ecr_repository" "app" {
  name = "app"
}
resource "aws_ecs_cluster" "main" {
  name = "main"
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}
resource "aws_scheduler_schedule" "tick" {
  name = "tick"
  flexible_time_window {
    mode = "OFF"
  }
  schedule_expression = "rate(1 hour)"
  target {
    arn      = aws_lambda_function.hello.arn
    role_arn = "arn:aws:iam::${data.aws_caller_identity.me.account_id}:role/scheduler"
  }
}
resource "aws_s3_bucket_versioning" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  versioning_configuration {
    status = "Suspended"
  }
}
resource "aws_s3_bucket_ownership_controls" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}
resource "aws_lambda_permission" "s3" {
  statement_id  = "s3"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.hello.function_name
  principal     = "s3.amazonaws.com"
  source_arn    = aws_s3_bucket.uploads.arn
}
resource "aws_s3_bucket_notification" "uploads" {
  bucket = aws_s3_bucket.uploads.id
  lambda_function {
    lambda_function_arn = aws_lambda_function.hello.arn
    events              = ["s3:ObjectCreated:*"]
  }
  depends_on = [aws_lambda_permission.s3]
}
resource "aws_sqs_queue" "dlq" {
  name = "jobs-dlq"
}
resource "aws_sqs_queue_redrive_policy" "jobs" {
  queue_url      = aws_sqs_queue.jobs.id
  redrive_policy = jsonencode({ deadLetterTargetArn = aws_sqs_queue.dlq.arn, maxReceiveCount = 3 })
}
resource "aws_lambda_function_event_invoke_config" "hello" {
  function_name          = aws_lambda_function.hello.function_name
  maximum_retry_attempts = 1
  destination_config {
    on_failure {
      destination = aws_sqs_queue.dlq.arn
    }
  }
}
resource "aws_lambda_alias" "live" {
  name             = "live"
  function_name    = aws_lambda_function.hello.function_name
  function_version = "$LATEST"
}
resource "aws_lambda_layer_version" "deps" {
  layer_name          = "deps"
  filename            = "fn.zip"
  compatible_runtimes = ["python3.11"]
}
resource "aws_scheduler_schedule_group" "jobs" {
  name = "jobs"
}
resource "aws_ecs_task_definition" "web" {
  family                   = "web"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "256"
  memory                   = "512"
  container_definitions = jsonencode([{
    name = "web", image = "busybox", essential = true, command = ["httpd", "-f"]
  }])
}
output "account" {
  value = data.aws_caller_identity.me.account_id
}
output "url" {
  value = aws_lambda_function_url.hello.function_url
}
'''


def terraform_or_skip():
    exe = shutil.which("terraform")
    provider = MIRROR / "registry.terraform.io/hashicorp/aws" / PROVIDER
    if not exe or not provider.is_dir():
        pytest.skip(f"Terraform and the AWS provider {PROVIDER} are not on this machine ({MIRROR})")
    return exe


def test_terraform_applies_plans_no_change_and_destroys(tmp_path):
    exe = terraform_or_skip()
    server = Server(tmp_path / "data", args=["--isolation", "process"]).start()
    try:
        work = tmp_path / "tf"
        work.mkdir()
        key, secret = server.credentials()
        config = CONFIG.replace("PROVIDER", PROVIDER).replace("KEY", key).replace("SECRET", secret)
        (work / "main.tf").write_text(config.replace("ENDPOINT", server.endpoint))
        with zipfile.ZipFile(work / "fn.zip", "w") as z:
            z.writestr("app.py", "def handler(event, context):\n    return {'ok': True}\n")
        (work / "cli.tfrc").write_text(
            f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n')
        env = dict(os.environ, TF_CLI_CONFIG_FILE=str(work / "cli.tfrc"), TF_IN_AUTOMATION="1",
                   CHECKPOINT_DISABLE="1", TF_DATA_DIR=str(work / ".terraform"))

        def tf(*args):
            return subprocess.run([exe, *args, "-input=false", "-no-color"], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=600)

        for step in (("init",), ("apply", "-auto-approve")):
            r = tf(*step)
            assert r.returncode == 0, f"terraform {step[0]}:\n{r.stdout}\n{r.stderr}"
        outputs = json.loads(subprocess.run([exe, "output", "-json"], cwd=work, env=env, capture_output=True,
                                            text=True, timeout=60, check=True).stdout)
        assert outputs["account"]["value"] == ACCOUNT
        assert outputs["url"]["value"].startswith(server.endpoint)
        # What was applied is there, tagged by the provider's default tags.
        lam = server.client()
        assert lam.get_function(FunctionName="hello")["Tags"] == {"project": "demo"}
        logs = aws_client(server, "logs")
        group_arn = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/hello"
        assert logs.list_tags_for_resource(resourceArn=group_arn)["tags"] == {"project": "demo"}
        assert [m["State"] for m in lam.list_event_source_mappings(FunctionName="hello")["EventSourceMappings"]] \
            == ["Enabled"]
        assert aws_client(server, "ecs").describe_clusters(clusters=["main"])["clusters"][0]["settings"] == \
            [{"name": "containerInsights", "value": "enabled"}]
        s3 = aws_client(server, "s3")
        assert s3.get_bucket_versioning(Bucket="uploads-demo")["Status"] == "Suspended"
        rules = s3.get_bucket_notification_configuration(Bucket="uploads-demo")["LambdaFunctionConfigurations"]
        assert [r["LambdaFunctionArn"] for r in rules] == [f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:hello"]

        # Read back, everything matches the configuration: no change planned.
        r = tf("plan", "-detailed-exitcode")
        assert r.returncode == 0, f"terraform plan found changes or failed:\n{r.stdout}\n{r.stderr}"

        r = tf("destroy", "-auto-approve")
        assert r.returncode == 0, f"terraform destroy:\n{r.stdout}\n{r.stderr}"
        assert lam.list_functions()["Functions"] == []
        assert aws_client(server, "s3").list_buckets()["Buckets"] == []
        assert sqs_client(server).list_queues().get("QueueUrls", []) == []
    finally:
        server.stop()
