//! TEMP stub until the rewrite branch lands.
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct RewriteError;
pub fn write_promotion(_path: &std::path::Path, _promoted: &str) -> Result<(), RewriteError> {
    Err(RewriteError)
}
