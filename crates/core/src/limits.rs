//! The numeric limits of the Lambda service, as AWS enforces them. The API
//! model's own bounds are not repeated here: `nimbus-model` reads them from
//! the model; these are the ones beyond it, or Nimbus's own sizes.

pub const MEMORY_MAX: i64 = 10_240;
pub const MEMORY_DEFAULT: u32 = 128;
pub const TIMEOUT_MAX: i64 = 900;
pub const TIMEOUT_DEFAULT: u32 = 3;
pub const EPHEMERAL_MAX: i64 = 10_240;
pub const EPHEMERAL_DEFAULT: u32 = 512;
/// Total size of environment variables, measured as AWS does (the JSON of the map).
pub const ENV_MAX_BYTES: usize = 4 * 1024;
pub const LAYERS_MAX: usize = 5;
pub const FUNCTION_NAME_MAX: usize = 64;
/// Unzipped code plus all layers.
pub const UNZIPPED_MAX: u64 = 262_144_000;
/// Most entries in one zip (code or layer). AWS states none; each entry
/// costs an inode and, for a directory or a small file, a whole block on
/// disk, which the unzipped size does not count: 20,000 directories in a
/// 1.7 MB zip took 79 MB, and a 50 MB zip holds 600,000 entries.
pub const ZIP_ENTRIES_MAX: usize = 100_000;
/// Largest zip accepted inline (50 MB).
pub const ZIPPED_MAX: u64 = 52_428_800;
/// Largest request body for operations that carry a base64 zip.
pub const CODE_REQUEST_MAX: usize = 69_905_067;
/// Largest request body for everything else (the sync Invoke limit).
pub const REQUEST_MAX: usize = 6_291_456;
pub const POLICY_MAX_BYTES: usize = 20 * 1024;
pub const TAG_KEY_MAX: usize = 128;
pub const TAGS_MAX: usize = 50;
/// Reserved concurrency may not leave less than this unreserved (AWS: 100
/// of its default 1,000). A node with a smaller limit keeps a tenth of it.
pub fn unreserved_min(concurrency_limit: u32) -> u32 {
    100.min(concurrency_limit / 10)
}
pub const TOTAL_CODE_SIZE: u64 = 80_530_636_800;
pub const LIST_MAX_ITEMS: usize = 50;
pub const LAYER_NAME_MAX: usize = 140;
