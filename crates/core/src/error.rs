//! The errors the domain rules produce. Each variant is one AWS error type;
//! the HTTP status and wire name are assigned in one table in `nimbus-api`.

/// A rule of the Lambda model was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value breaks a rule of the service (AWS `InvalidParameterValueException`).
    #[error("{0}")]
    InvalidParameter(String),
    /// A value breaks a constraint of the API model: pattern, length or
    /// minimum (AWS `ValidationException`).
    #[error("{0}")]
    Validation(String),
    /// The thing named does not exist (AWS `ResourceNotFoundException`).
    #[error("{0}")]
    NotFound(String),
    /// The thing exists already, or its state forbids the change
    /// (AWS `ResourceConflictException`).
    #[error("{0}")]
    Conflict(String),
    /// A `RevisionId` precondition failed (AWS `PreconditionFailedException`).
    #[error("{0}")]
    PreconditionFailed(String),
    /// A provisioned-concurrency configuration is missing
    /// (AWS `ProvisionedConcurrencyConfigNotFoundException`).
    #[error("{0}")]
    ProvisionedConcurrencyNotFound(String),
    /// The resource policy would exceed 20 KB (AWS `PolicyLengthExceededException`).
    #[error("{0}")]
    PolicyLengthExceeded(String),
    /// The request body is not the JSON the operation expects
    /// (AWS `InvalidRequestContentException`).
    #[error("{0}")]
    InvalidRequestContent(String),
    /// A payload or upload is too large (AWS `RequestEntityTooLargeException`).
    #[error("{0}")]
    TooLarge(String),
    /// The resource belongs to another account (AWS `AccessDeniedException`).
    #[error("{0}")]
    AccessDenied(String),
    /// A code signing configuration named does not exist
    /// (AWS `CodeSigningConfigNotFoundException`).
    #[error("{0}")]
    CodeSigningConfigNotFound(String),
    /// A deployment is not signed by a trusted profile and the function's
    /// code signing policy is `Enforce` (AWS `CodeVerificationFailedException`).
    #[error("{0}")]
    CodeVerificationFailed(String),
    /// The resource is changing and takes no other change until it settles
    /// (AWS `ResourceInUseException`).
    #[error("{0}")]
    InUse(String),
    /// An account quota would be passed (AWS `ServiceQuotaExceededException`).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A concurrency or scaling limit was reached (AWS `TooManyRequestsException`).
    #[error("Rate Exceeded.")]
    Throttled(ThrottleReason),
}

/// Why an invocation was throttled: AWS's `ThrottleReason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    /// The account's unreserved concurrency is in use.
    ConcurrentInvocationLimitExceeded,
    /// The function's reserved concurrency is in use (or is 0).
    ReservedFunctionConcurrentInvocationLimitExceeded,
    /// The function made new environments faster than its scaling rate.
    FunctionInvocationRateLimitExceeded,
}

impl ThrottleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConcurrentInvocationLimitExceeded => "ConcurrentInvocationLimitExceeded",
            Self::ReservedFunctionConcurrentInvocationLimitExceeded => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
            Self::FunctionInvocationRateLimitExceeded => "FunctionInvocationRateLimitExceeded",
        }
    }
}

/// The invocations running when one was admitted, itself included: what
/// `ConcurrentExecutions` (account and function) and
/// `UnreservedConcurrentExecutions` (account) sample. The worker's pool,
/// which admits on these counts, is the only place they are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Concurrency {
    pub account: u32,
    pub function: u32,
    /// Of the account's, those of functions without reserved concurrency.
    pub unreserved: u32,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidParameter(msg.into())
    }
}
