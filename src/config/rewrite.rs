//! Writes a promotion back into proxy.toml (SPEC §6, step 9): the promoted follower becomes `[leader]`, its entry
//! leaves its pool, and everything else in the file — comments, key order, blank lines — stays as the operator wrote
//! it.
//!
//! Owns only the edit of the text and the atomic replacement of the file. Never decides whether a promotion should
//! happen, and never leaves a file behind that `Config::parse` would refuse: the edited text is validated before it
//! is written, and it replaces the old file in one rename.
//!
//! What leaves with a removed entry (a follower, an emptied pool, `routing.read_pool`): its own lines, the comment on
//! its last line, and the comment lines directly above it — toml_edit attaches those to the entry, and this module
//! does the same for entries of an inline array. Every other line is kept byte for byte.

#[cfg(test)]
mod tests;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, RawString, TableLike, Value};

use super::{Config, ConfigErrors};

/// Why a promotion could not be written into the config file.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("{file}: not valid TOML: {source}")]
    NotToml {
        file: String,
        #[source]
        source: toml_edit::TomlError,
    },
    #[error("{file}: no follower named \"{name}\" in any [[follower_pools]] instances")]
    NoSuchFollower { file: String, name: String },
    #[error("{file}: follower \"{name}\" has no `{key}`, so it cannot become the leader")]
    IncompleteFollower {
        file: String,
        name: String,
        key: &'static str,
    },
    #[error("{file}: there is no [leader] table to promote into")]
    NoLeader { file: String },
    #[error("promoting \"{name}\" would leave an invalid config, so the file was not changed:\n{errors}")]
    Invalid { name: String, errors: ConfigErrors },
    #[error("{what} {path}: {source}", path = .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Rewrites config `text` so that follower `promoted` is the leader: `[leader]` takes its `name`, `host` and `port`
/// (its other keys stay), the follower's entry leaves its pool, and the old leader is dropped — fenced, it is no
/// follower. A pool left without instances is removed, and so is `routing.read_pool` when it named that pool.
/// Returns the new text, already checked with [`Config::parse`]; `file_name` is used in error messages.
pub fn promote_in_text(text: &str, file_name: &str, promoted: &str) -> Result<String, RewriteError> {
    let mut doc: DocumentMut = text.parse().map_err(|source| RewriteError::NotToml {
        file: file_name.to_owned(),
        source,
    })?;
    let root = doc.as_table_mut();

    let (pool_index, instance_index) =
        find_follower(root.get("follower_pools"), promoted).ok_or_else(|| RewriteError::NoSuchFollower {
            file: file_name.to_owned(),
            name: promoted.to_owned(),
        })?;
    let pools = root.get_mut("follower_pools").expect("find_follower found it");
    let pool = entry_mut(pools, pool_index).expect("find_follower found it");
    let instances = pool.get_mut("instances").expect("find_follower found it");
    let follower = entry_mut(instances, instance_index).expect("find_follower found it");
    let mut address = Vec::with_capacity(3);
    for key in ["name", "host", "port"] {
        let value = follower
            .get(key)
            .and_then(Item::as_value)
            .ok_or_else(|| RewriteError::IncompleteFollower {
                file: file_name.to_owned(),
                name: promoted.to_owned(),
                key,
            })?;
        address.push((key, value.clone()));
    }

    remove_entry(instances, instance_index);
    if entry_count(instances) == 0 {
        let pool_name = pool.get("name").and_then(Item::as_str).map(str::to_owned);
        remove_entry(pools, pool_index);
        if entry_count(pools) == 0 {
            root.remove("follower_pools");
        }
        if let Some(pool_name) = pool_name
            && let Some(routing) = root.get_mut("routing").and_then(Item::as_table_like_mut)
            && routing.get("read_pool").and_then(Item::as_str) == Some(pool_name.as_str())
        {
            routing.remove("read_pool");
        }
    }

    let leader = root
        .get_mut("leader")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| RewriteError::NoLeader {
            file: file_name.to_owned(),
        })?;
    for (key, value) in address {
        set_keeping_decor(leader, key, value);
    }

    let rewritten = doc.to_string();
    Config::parse(&rewritten, file_name).map_err(|errors| RewriteError::Invalid {
        name: promoted.to_owned(),
        errors,
    })?;
    Ok(rewritten)
}

/// Reads the config file at `path`, promotes `promoted` in it ([`promote_in_text`]) and replaces the file
/// atomically: a temp file in the same directory with the original's permissions, fsynced, renamed over it. A
/// symlinked config is written through the link, so the link stays. On any error the original file is untouched.
pub fn write_promotion(path: &Path, promoted: &str) -> Result<(), RewriteError> {
    let io_error = |what, path: &Path| {
        let path = path.to_owned();
        move |source| RewriteError::Io { what, path, source }
    };
    let path = &fs::canonicalize(path).map_err(io_error("cannot resolve", path))?;
    let text = fs::read_to_string(path).map_err(io_error("cannot read", path))?;
    let rewritten = promote_in_text(&text, &path.display().to_string(), promoted)?;
    let permissions = fs::metadata(path).map_err(io_error("cannot stat", path))?.permissions();

    let dir = path.parent().expect("a canonical file path has a parent");
    let file_name = path.file_name().expect("a canonical file path has a file name");
    let temp = dir.join(format!(
        ".{}.pgsplit-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let replaced = write_synced(&temp, &rewritten, permissions)
        .map_err(io_error("cannot write", &temp))
        .and_then(|()| fs::rename(&temp, path).map_err(io_error("cannot rename over", path)));
    if replaced.is_err() {
        // Best effort: the error being returned is the one that matters.
        let _ = fs::remove_file(&temp);
    }
    replaced?;
    // The rename is durable only once the directory entry is on disk.
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("cannot sync", dir))
}

/// Writes `text` to a new file at `path` with `permissions` and flushes it to disk.
fn write_synced(path: &Path, text: &str, permissions: fs::Permissions) -> std::io::Result<()> {
    // Created with the final mode, since the config may hold passwords; then set exactly, as `mode` is subject to
    // the umask.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(permissions.mode())
        .open(path)?;
    file.set_permissions(permissions)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Where follower `name` is: (index of its pool in `follower_pools`, index in that pool's `instances`).
fn find_follower(pools: Option<&Item>, name: &str) -> Option<(usize, usize)> {
    let pools = pools?;
    (0..entry_count(pools)).find_map(|pool_index| {
        let instances = entry(pools, pool_index)?.get("instances")?;
        let instance_index = (0..entry_count(instances))
            .find(|&i| entry(instances, i).and_then(|e| e.get("name")).and_then(Item::as_str) == Some(name))?;
        Some((pool_index, instance_index))
    })
}

// An array of tables may be spelled `[[x]]` (an array of tables) or `x = [ { … }, … ]` (an array of inline
// tables); the four helpers below treat both alike.

fn entry_count(item: &Item) -> usize {
    match item {
        Item::ArrayOfTables(tables) => tables.len(),
        Item::Value(Value::Array(array)) => array.len(),
        _ => 0,
    }
}

fn entry(item: &Item, index: usize) -> Option<&dyn TableLike> {
    match item {
        Item::ArrayOfTables(tables) => tables.get(index).map(|table| table as &dyn TableLike),
        Item::Value(Value::Array(array)) => array
            .get(index)
            .and_then(Value::as_inline_table)
            .map(|table| table as &dyn TableLike),
        _ => None,
    }
}

fn entry_mut(item: &mut Item, index: usize) -> Option<&mut dyn TableLike> {
    match item {
        Item::ArrayOfTables(tables) => tables.get_mut(index).map(|table| table as &mut dyn TableLike),
        Item::Value(Value::Array(array)) => array
            .get_mut(index)
            .and_then(Value::as_inline_table_mut)
            .map(|table| table as &mut dyn TableLike),
        _ => None,
    }
}

/// Removes entry `index`. A `[[x]]` table leaves with its header's decor; an inline entry's surroundings are
/// stitched so the lines around it stay as they were (see [`stitch`]).
fn remove_entry(item: &mut Item, index: usize) {
    match item {
        Item::ArrayOfTables(tables) => {
            tables.remove(index);
        }
        Item::Value(Value::Array(array)) => {
            let last = index + 1 == array.len();
            let decor = array.get(index).expect("an index find_follower returned").decor();
            let before = decor_text(decor.prefix());
            // What follows the entry up to the next entry or `]`. Its suffix (blanks before its comma) goes with it,
            // except for a last entry without a trailing comma, where the suffix is all there is before `]`.
            let after = if !last {
                decor_text(array.get(index + 1).and_then(|next| next.decor().prefix()))
            } else if array.trailing_comma() {
                decor_text(Some(array.trailing()))
            } else {
                decor_text(decor.suffix()) + &decor_text(Some(array.trailing()))
            };
            let stitched = stitch(&before, &after);
            array.remove(index);
            if !last {
                array.get_mut(index).expect("not last").decor_mut().set_prefix(stitched);
            } else if index > 0 && !array.trailing_comma() {
                // The comma before the removed entry went with it: the text now follows the new last entry.
                let previous = array.get_mut(index - 1).expect("index > 0").decor_mut();
                let kept = decor_text(previous.suffix());
                previous.set_suffix(kept + &stitched);
            } else {
                array.set_trailing(stitched);
            }
        }
        _ => {}
    }
}

fn decor_text(raw: Option<&RawString>) -> String {
    raw.and_then(RawString::as_str).unwrap_or("").to_owned()
}

/// Joins the text before a removed inline entry (`before`: from the previous comma or `[`) with the text after it
/// (`after`: up to the next entry or `]`), dropping the entry's own lines: the comment lines directly above it and
/// the rest of its last line. The rest of the previous line (e.g. a comment after `instances = [`) and every line
/// after the entry's stay.
fn stitch(before: &str, after: &str) -> String {
    let after_entry_line = after.find('\n').map(|end| &after[end + 1..]);
    match (before.find('\n'), after_entry_line) {
        // The entry had lines of its own: keep the previous line's end and what follows the entry's line.
        (Some(end), Some(rest)) => format!("{}{rest}", &before[..=end]),
        // The entry ended the previous line: end that line where the entry was.
        (None, Some(rest)) => format!("{}\n{rest}", before.trim_end()),
        // The entry shared its line with what follows: that takes its place, at its indentation.
        (Some(end), None) => {
            let indent = before.rfind('\n').map_or(before, |start| &before[start + 1..]);
            format!("{}{indent}", &before[..=end])
        }
        (None, None) => before.to_owned(),
    }
}

/// Sets `key` to `value` in `table`. An existing value's decor is kept, with the padding before a trailing comment
/// adjusted so the comment stays in its column; a new key gets the default layout.
fn set_keeping_decor(table: &mut dyn TableLike, key: &str, mut value: Value) {
    value.decor_mut().clear();
    if let Some(Item::Value(old)) = table.get_mut(key) {
        let old_width = bare_width(old);
        let new_width = bare_width(&value);
        let mut decor = old.decor().clone();
        if let Some(suffix) = decor.suffix().and_then(RawString::as_str) {
            let comment = suffix.trim_start_matches(' ');
            if comment.starts_with('#') {
                let padding = suffix.len() - comment.len();
                let padding = (padding + old_width).saturating_sub(new_width).max(1);
                decor.set_suffix(format!("{}{comment}", " ".repeat(padding)));
            }
        }
        *value.decor_mut() = decor;
        *old = value;
    } else {
        table.insert(key, Item::Value(value));
    }
}

/// Width of a value as written, without its surrounding blanks and comments.
fn bare_width(value: &Value) -> usize {
    let mut bare = value.clone();
    bare.decor_mut().clear();
    bare.to_string().chars().count()
}
