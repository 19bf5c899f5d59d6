"""`nimbus function deploy --trigger s3://bucket/prefix*suffix`: the
permission and the bucket notification AWS's tutorial sets up by hand, in
one command that can be run again."""

import json

import boto3
from botocore.config import Config

from conftest import ACCOUNT, REGION, arn, create, nimbus_cli, unique_name


def test_deploy_trigger_sets_the_permission_and_the_notification(server, lam, tmp_path):
    key, secret = server.credentials()
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=key,
                      aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))
    bucket = unique_name("photos")
    s3.create_bucket(Bucket=bucket)
    # A rule of another function, which the shortcut must keep.
    other = create(lam)["FunctionName"]
    lam.add_permission(FunctionName=other, StatementId="s3", Action="lambda:InvokeFunction",
                       Principal="s3.amazonaws.com", SourceArn=f"arn:aws:s3:::{bucket}")
    other_rule = {"Id": "cleanup", "LambdaFunctionArn": arn(other), "Events": ["s3:ObjectRemoved:*"]}
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": [other_rule]})

    (tmp_path / "app.py").write_text("def handler(event, context):\n    return event\n")
    name = unique_name()
    deploy = ["function", "deploy", str(tmp_path), "--name", name, "--runtime", "python3.11",
              "--handler", "app.handler", "--trigger", f"s3://{bucket}/uploads/*.jpg"]
    r = nimbus_cli(server, *deploy)
    assert f"s3://{bucket}/uploads/*.jpg" in r.stderr

    def rules():
        got = s3.get_bucket_notification_configuration(Bucket=bucket)["LambdaFunctionConfigurations"]
        return sorted(got, key=lambda c: c["Id"])

    mine = {
        "Id": f"nimbus-{name}", "LambdaFunctionArn": arn(name), "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}, {"Name": "suffix", "Value": ".jpg"}]}},
    }

    def normalised(cs):
        for c in cs:
            for rule in c.get("Filter", {}).get("Key", {}).get("FilterRules", []):
                rule["Name"] = rule["Name"].lower()
        return cs

    assert normalised(rules()) == sorted([other_rule, mine], key=lambda c: c["Id"])
    statements = json.loads(lam.get_policy(FunctionName=name)["Policy"])["Statement"]
    assert [(s["Principal"], s["Action"], s["Condition"]) for s in statements] == [(
        {"Service": "s3.amazonaws.com"}, "lambda:InvokeFunction",
        {"StringEquals": {"AWS:SourceAccount": ACCOUNT}, "ArnLike": {"AWS:SourceArn": f"arn:aws:s3:::{bucket}"}},
    )]

    # Again, with another pattern: the function's rule is replaced, not added.
    deploy[-1] = f"s3://{bucket}/raw/"
    nimbus_cli(server, *deploy)
    mine["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": "raw/"}]}}
    assert normalised(rules()) == sorted([other_rule, mine], key=lambda c: c["Id"])
    assert len(json.loads(lam.get_policy(FunctionName=name)["Policy"])["Statement"]) == 1

    # Two patterns on one bucket are two rules (the second replaced the first).
    nimbus_cli(server, *deploy, "--trigger", f"s3://{bucket}/more/*.png")
    second = {"Id": f"nimbus-{name}-2", "LambdaFunctionArn": arn(name), "Events": ["s3:ObjectCreated:*"],
              "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "more/"},
                                                 {"Name": "suffix", "Value": ".png"}]}}}
    assert normalised(rules()) == sorted([other_rule, mine, second], key=lambda c: c["Id"])

    r = nimbus_cli(server, "function", "deploy", "--help")
    assert "--trigger" in r.stdout and "s3:ObjectCreated:*" in r.stdout


def test_a_trigger_on_a_missing_bucket_is_refused_before_the_function_is_made(server, lam, tmp_path):
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return event\n")
    name, bucket = unique_name(), unique_name("nobucket")
    r = nimbus_cli(server, "function", "deploy", str(tmp_path), "--name", name, "--runtime", "python3.11",
                   "--handler", "app.handler", "--trigger", f"s3://{bucket}/uploads/*.jpg", check=False)
    assert r.returncode != 0
    assert f"error: the trigger's bucket {bucket} does not exist" in r.stderr, r.stderr
    assert name not in [f["FunctionName"] for f in lam.list_functions()["Functions"]], "nothing half done"

