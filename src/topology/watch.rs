//! TEMP stub until the rewrite branch lands.
use std::path::Path;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    Signal,
    FileChanged,
}
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct WatchError;
pub struct Watch;
impl Watch {
    pub async fn next(&mut self) -> Option<ReloadCause> {
        std::future::pending().await
    }
}
pub fn reload_triggers(_p: &Path) -> Result<Watch, WatchError> {
    Ok(Watch)
}
