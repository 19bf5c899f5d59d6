"""Invoke is not available until sandboxed execution lands: it must say so
clearly. The execution issue replaces this file."""

import pytest
from botocore.exceptions import ClientError

from conftest import create, error_code


def test_invoke_answers_service_exception(lam):
    name = create(lam)["FunctionName"]
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert error_code(e) == "ServiceException"
    assert "not available" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName="does-not-exist", Payload=b"{}")
    assert error_code(e) == "ResourceNotFoundException"
