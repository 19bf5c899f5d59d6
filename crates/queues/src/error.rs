//! The queues' errors: one variant per error AWS's SQS answers, with its
//! message. The API's error table maps them to each protocol's codes.

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("The specified queue does not exist.")]
    QueueDoesNotExist,
    #[error("A queue already exists with the same name and a different value for attribute(s) {0}")]
    QueueNameExists(String),
    #[error("Unknown Attribute {0}.")]
    InvalidAttributeName(String),
    #[error("{0}")]
    InvalidAttributeValue(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("The request must contain the parameter {0}.")]
    MissingParameter(String),
    #[error("Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF")]
    InvalidMessageContents,
    #[error("The input receipt handle \"{0}\" is not a valid receipt handle.")]
    ReceiptHandleIsInvalid(String),
    #[error("Id {0} repeated.")]
    BatchEntryIdsNotDistinct(String),
    #[error("Batch requests cannot be longer than 1048576 bytes. You have sent {0} bytes.")]
    BatchRequestTooLong(usize),
    #[error("There should be at least one {0}RequestEntry in the request.")]
    EmptyBatchRequest(&'static str),
    #[error("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.")]
    InvalidBatchEntryId,
    #[error("Maximum number of entries per request are 10. You have sent {0}.")]
    TooManyEntriesInBatchRequest(usize),
    #[error("You must wait 60 seconds after deleting a queue before you can create another queue with the same name.")]
    QueueDeletedRecently,
    #[error("Only one PurgeQueue operation on {0} is allowed every 60 seconds.")]
    PurgeQueueInProgress(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    UnsupportedOperation(String),
    /// The store failed; nothing the client did.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<nimbus_store::Error> for Error {
    fn from(e: nimbus_store::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
