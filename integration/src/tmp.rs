//! Per-test temporary directories and config template rendering.
//!
//! Templates live in [`crate::config_dir`] and use `{{NAME}}` placeholders. Rendering substitutes
//! every given `(NAME, value)` pair and fails if any `{{` is left over, so a forgotten placeholder is
//! caught before Envoy ever sees the file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{config_dir, Error, Result};

static DIR_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under `std::env::temp_dir()` for one test (rendered configs, process logs,
/// admin address files). Removed on Drop unless env `RT_KEEP_TMP` is set (then its path is printed).
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `<tmp>/rt-it-<label>-<pid>-<seq>` (unique within and across processes).
    pub fn new(label: &str) -> Result<TestDir> {
        let seq = DIR_SEQ.fetch_add(1, Ordering::Relaxed);
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        let path = std::env::temp_dir().join(format!("rt-it-{safe}-{}-{seq}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| Error(format!("cannot create {}: {e}", path.display())))?;
        Ok(TestDir { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of a file named `name` inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A path `<stem>.<ext>` inside the directory that does not exist yet (adds `-2`, `-3`, … if
    /// needed), e.g. for the log of a restarted process.
    pub fn unique_file(&self, stem: &str, ext: &str) -> PathBuf {
        let first = self.path.join(format!("{stem}.{ext}"));
        if !first.exists() {
            return first;
        }
        (2..)
            .map(|i| self.path.join(format!("{stem}-{i}.{ext}")))
            .find(|p| !p.exists())
            .expect("an unused file name")
    }

    /// Renders template `template_name` with `vars` (see [`render`]) into file `out_name` in this
    /// directory and returns the file's path.
    pub fn render(
        &self,
        template_name: &str,
        out_name: &str,
        vars: &[(&str, String)],
    ) -> Result<PathBuf> {
        let text = render(template_name, vars)?;
        let out = self.file(out_name);
        std::fs::write(&out, text)
            .map_err(|e| Error(format!("cannot write {}: {e}", out.display())))?;
        Ok(out)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("RT_KEEP_TMP").is_some() {
            eprintln!("[rt-integration] kept test directory {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Reads template `template_name` from [`config_dir`] and replaces each `{{KEY}}` by its value.
///
/// Fails if the template cannot be read, or if any `{{` is left after substitution (the error names
/// the left-over placeholders).
pub fn render(template_name: &str, vars: &[(&str, String)]) -> Result<String> {
    let path = config_dir().join(template_name);
    let template = std::fs::read_to_string(&path)
        .map_err(|e| Error(format!("cannot read template {}: {e}", path.display())))?;
    render_str(&template, vars).map_err(|e| e.context(format!("template {}", path.display())))
}

/// [`render`] on a template given as text.
pub fn render_str(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    if out.contains("{{") {
        let mut leftovers: Vec<String> = Vec::new();
        let mut rest = out.as_str();
        while let Some(start) = rest.find("{{") {
            let tail = &rest[start..];
            let end = tail.find("}}").map(|e| e + 2).unwrap_or(tail.len().min(40));
            let name = tail[..end].to_string();
            if !leftovers.contains(&name) {
                leftovers.push(name);
            }
            rest = &tail[2..];
        }
        return Err(Error(format!("unsubstituted placeholder(s): {}", leftovers.join(", "))));
    }
    Ok(out)
}

/// Inserts `lines` after the single line of `text` whose trimmed content is `anchor`, with that
/// line's indentation (for editing a rendered config). Errors if `anchor` is not found exactly
/// once.
pub fn insert_sibling_lines(text: &str, anchor: &str, lines: &[&str]) -> Result<String> {
    insert_at(text, anchor, lines, |found| found == 1)
}

/// [`insert_sibling_lines`] after every line equal to `anchor` (at least one), e.g. the two
/// copies of the handshake filter's config in `upstream-owned.yaml` (listener filter and the
/// network filter behind it).
pub fn insert_sibling_lines_each(text: &str, anchor: &str, lines: &[&str]) -> Result<String> {
    insert_at(text, anchor, lines, |found| found >= 1)
}

fn insert_at(text: &str, anchor: &str, lines: &[&str], found_ok: impl Fn(usize) -> bool) -> Result<String> {
    if lines.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::new();
    let mut found = 0;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == anchor {
            found += 1;
            let indent = &line[..line.len() - line.trim_start().len()];
            for l in lines {
                out.push_str(indent);
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    if !found_ok(found) {
        return Err(Error(format!("anchor {anchor:?} found {found} times in the template")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_rejects_leftovers() {
        let ok = render_str("a {{X}} b {{X}} {{Y}}", &[("X", "1".into()), ("Y", "2".into())]);
        assert_eq!(ok.unwrap(), "a 1 b 1 2");
        let err = render_str("a {{X}} {{Z}}", &[("X", "1".into())]).unwrap_err();
        assert!(err.0.contains("{{Z}}"), "{err}");
    }

    #[test]
    fn shipped_templates_render_completely() {
        let common = crate::topology::responder_vars(1, 2, 3, 3);
        for t in ["upstream.yaml", "builtin-upstream.yaml"] {
            let text = render(t, &common).unwrap();
            assert!(text.contains("port_value: 2"), "{t}");
            let without: Vec<_> = common.iter().filter(|(k, _)| *k != "PING_FAILURE_THRESHOLD").cloned().collect();
            assert!(render(t, &without).is_err(), "{t} must need PING_FAILURE_THRESHOLD");
        }
        let ds = [
            ("ADMIN_PORT", "1".to_string()),
            ("NODE_ID", "n".to_string()),
            ("CLUSTER_ID", "c".to_string()),
            ("TENANT_ID", "t".to_string()),
            ("TUNNEL_COUNT", "1".to_string()),
            ("RESPONDER_PORT", "2".to_string()),
            ("BACKEND_PORT", "3".to_string()),
            ("GRPC_PORT", "4".to_string()),
        ];
        let text = render("downstream.yaml", &ds).unwrap();
        assert!(text.contains("rc://n:c:t@upstream-cluster:1"));
        assert!(text.contains("port_value: 4"), "the local-grpc cluster uses GRPC_PORT");
        let without: Vec<_> = ds.iter().filter(|(k, _)| *k != "GRPC_PORT").cloned().collect();
        assert!(render("downstream.yaml", &without).is_err(), "downstream.yaml must need GRPC_PORT");
    }
}
