//! The wire types read and write AWS's JSON exactly: fixtures in AWS's own
//! shapes round-trip unchanged.

use nimbus_wire::*;

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(json: &str) -> (T, serde_json::Value) {
    let parsed: T = serde_json::from_str(json).expect("fixture parses");
    let back = serde_json::to_value(&parsed).expect("serialises");
    (parsed, back)
}

#[test]
fn function_configuration_round_trips() {
    let json = include_str!("fixtures/function_configuration.json");
    let (cfg, back): (FunctionConfiguration, _) = roundtrip(json);
    assert_eq!(cfg.code_sha256, "PFn4S+er27qk+UuZSTKEQfNKG/XNn7QJs90mJgq6oH8=");
    assert_eq!(cfg.ephemeral_storage.size, 512);
    let original: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(back, original);
}

#[test]
fn pending_configuration_with_vpc_and_runtime_version_round_trips() {
    let json = include_str!("fixtures/function_configuration_pending.json");
    let (cfg, back): (FunctionConfiguration, _) = roundtrip(json);
    assert_eq!((cfg.state.as_deref(), cfg.state_reason_code.as_deref()), (Some("Pending"), Some("Creating")));
    assert!(cfg.last_update_status.is_none(), "AWS reports no update status while creating");
    assert_eq!(cfg.vpc_config.as_ref().map(|v| v.vpc_id.as_str()), Some("vpc-08e1234567890f1a9"));
    let original: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(back, original);
}

#[test]
fn create_function_request_reads_aws_names_and_ignores_unknown_members() {
    let json = include_str!("fixtures/create_function_request.json");
    let (req, _): (CreateFunctionRequest, _) = roundtrip(json);
    assert_eq!(req.settings.kms_key_arn.as_deref(), Some("arn:aws:kms:us-east-1:123456789012:key/k"));
    assert_eq!(req.settings.memory_size, Some(256));
    assert_eq!(req.code.and_then(|c| c.zip_file).as_deref(), Some("UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="));
    assert_eq!(req.settings.ephemeral_storage.map(|e| e.size), Some(1024));
    assert_eq!(req.role.as_deref(), Some("arn:aws:iam::123456789012:role/lambda-role"));
}

#[test]
fn error_body_uses_the_casing_each_exception_declares() {
    let lower = ErrorBody { kind: "User".into(), message: Some("m".into()), message_upper: None, reason: None };
    assert_eq!(serde_json::to_string(&lower).unwrap(), r#"{"Type":"User","message":"m"}"#);
    let upper = ErrorBody { kind: "User".into(), message: None, message_upper: Some("m".into()), reason: None };
    assert_eq!(serde_json::to_string(&upper).unwrap(), r#"{"Type":"User","Message":"m"}"#);
}

#[test]
fn code_signing_config_response_round_trips() {
    let json = r#"{"CodeSigningConfig":{"CodeSigningConfigId":"csc-0e3ad2a6d1e0c1a7f","CodeSigningConfigArn":"arn:aws:lambda:us-west-2:123456789012:code-signing-config:csc-0e3ad2a6d1e0c1a7f","Description":"","AllowedPublishers":{"SigningProfileVersionArns":["arn:aws:signer:us-west-2:123456789012:/signing-profiles/my_profile/abcdef1234"]},"CodeSigningPolicies":{"UntrustedArtifactOnDeployment":"Enforce"},"LastModified":"2020-11-25T01:07:09.046+0000"}}"#;
    let (resp, back): (CodeSigningConfigResponse, _) = roundtrip(json);
    assert_eq!(
        resp.code_signing_config.code_signing_policies.untrusted_artifact_on_deployment.as_deref(),
        Some("Enforce")
    );
    let original: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(back, original);
}
