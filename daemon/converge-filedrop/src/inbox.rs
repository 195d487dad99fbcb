//! The watched folder on disk: which entries are files to take, how a file
//! is told apart from its changed self, and moving files out without
//! overwriting. Only regular files directly inside the folder are ever opened
//! or moved; symlinks and subfolders are never followed.

use std::ffi::{OsStr, OsString};
use std::fs::{self, FileType, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Format;

pub(crate) const PROCESSED: &str = "processed";
pub(crate) const FAILED: &str = "failed";
/// Appended to a moved file's name for its error report.
pub(crate) const REPORT_SUFFIX: &str = ".errors.json";

/// What tells a file apart from its changed self: an in-place writer changes
/// the size or the modification time, a rename-over changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub len: u64,
    pub modified: Option<SystemTime>,
    inode: u64,
}

impl Fingerprint {
    pub fn of(meta: &Metadata) -> Fingerprint {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

/// Why a folder entry is not a file to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    Symlink,
    NotAFile,
    NotUtf8,
    Temporary,
    Report,
    UnknownFormat,
}

impl Skip {
    pub fn reason(self) -> &'static str {
        match self {
            Skip::Symlink => "symlinks are not followed",
            Skip::NotAFile => "not a regular file",
            Skip::NotUtf8 => "the name is not UTF-8",
            Skip::Temporary => {
                "a temporary name (starts with `.` or ends in .tmp, .part or .partial)"
            }
            Skip::Report => "an error report",
            Skip::UnknownFormat => {
                "not a .csv, .json, .ndjson or .jsonl file, and the drop sets no `format`"
            }
        }
    }

    /// Worth telling the operator once: something they dropped is not taken.
    pub fn is_surprising(self) -> bool {
        matches!(self, Skip::Symlink | Skip::NotUtf8 | Skip::UnknownFormat)
    }
}

/// Names a writer uses while a file is incomplete.
pub(crate) fn is_temporary(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || [".tmp", ".part", ".partial"]
            .iter()
            .any(|s| lower.ends_with(s))
}

/// Decides from the name and the entry's own type (never the target of a
/// symlink) whether an entry is a file to take, and in which format.
pub(crate) fn classify(
    name: &OsStr,
    file_type: FileType,
    forced: Option<Format>,
) -> Result<(String, Format), Skip> {
    if file_type.is_symlink() {
        return Err(Skip::Symlink);
    }
    if !file_type.is_file() {
        return Err(Skip::NotAFile);
    }
    let name = name.to_str().ok_or(Skip::NotUtf8)?;
    if is_temporary(name) {
        return Err(Skip::Temporary);
    }
    if name.to_ascii_lowercase().ends_with(REPORT_SUFFIX) {
        return Err(Skip::Report);
    }
    let format = forced
        .or_else(|| Format::from_file_name(name))
        .ok_or(Skip::UnknownFormat)?;
    Ok((name.to_string(), format))
}

/// A file to take, as one scan saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub name: String,
    pub fingerprint: Fingerprint,
}

pub(crate) struct Scan {
    pub files: Vec<Seen>,
    pub skipped: Vec<(OsString, Skip)>,
}

/// The folder, resolved once, with its `processed/` and `failed/` folders.
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    pub dir: PathBuf,
}

impl Inbox {
    pub fn open(dir: &Path) -> io::Result<Inbox> {
        let dir = fs::canonicalize(dir)?;
        if !fs::metadata(&dir)?.is_dir() {
            return Err(io::Error::other("not a folder"));
        }
        for sub in [PROCESSED, FAILED] {
            ensure_folder(&dir.join(sub))?;
        }
        Ok(Inbox { dir })
    }

    pub fn scan(&self, forced: Option<Format>) -> io::Result<Scan> {
        let mut scan = Scan {
            files: Vec::new(),
            skipped: Vec::new(),
        };
        for entry in fs::read_dir(&self.dir)? {
            // An entry that vanishes between listing and stat is simply not there.
            let Ok(entry) = entry else { continue };
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            match classify(&entry.file_name(), file_type, forced) {
                Ok((name, _)) => {
                    // `DirEntry::metadata` does not follow symlinks.
                    if let Ok(meta) = entry.metadata() {
                        scan.files.push(Seen {
                            name,
                            fingerprint: Fingerprint::of(&meta),
                        });
                    }
                }
                Err(skip) => scan.skipped.push((entry.file_name(), skip)),
            }
        }
        scan.files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(scan)
    }

    /// Moves `name` into `processed/` or `failed/` under a name that neither
    /// a file nor a report there has yet: nothing is ever overwritten.
    pub fn move_out(&self, name: &str, to: &str) -> io::Result<PathBuf> {
        let target_dir = self.dir.join(to);
        ensure_folder(&target_dir)?;
        for n in 0..10_000u32 {
            let candidate = if n == 0 {
                name.to_string()
            } else {
                suffixed(name, n)
            };
            let target = target_dir.join(&candidate);
            let report = target_dir.join(format!("{candidate}{REPORT_SUFFIX}"));
            if exists(&target) || exists(&report) {
                continue;
            }
            fs::rename(self.dir.join(name), &target)?;
            return Ok(target);
        }
        Err(io::Error::other(format!(
            "no free name for `{name}` in {to}/ after 10000 tries"
        )))
    }
}

/// `brief.csv` -> `brief-2.csv`: the extension stays last so the file still
/// opens with the right program.
fn suffixed(name: &str, n: u32) -> String {
    match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => format!("{stem}-{n}.{extension}"),
        _ => format!("{name}-{n}"),
    }
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// `processed/` and `failed/` must be real folders: a symlink there would move
/// files out of the watched folder.
fn ensure_folder(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::other(format!(
            "`{}` must be a folder, not a file or a symlink",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised() {
        for name in [
            ".brief.csv",
            "brief.csv.tmp",
            "brief.csv.PART",
            "b.partial",
            "..",
        ] {
            assert!(is_temporary(name), "{name}");
        }
        for name in ["brief.csv", "brief.tmp.csv", "part.json"] {
            assert!(!is_temporary(name), "{name}");
        }
    }

    #[test]
    fn suffixes_keep_the_extension_last() {
        assert_eq!(suffixed("brief.csv", 2), "brief-2.csv");
        assert_eq!(suffixed("a.b.json", 1), "a.b-1.json");
        assert_eq!(suffixed("noext", 3), "noext-3");
    }
}
