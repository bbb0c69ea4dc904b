//! Progress bars driven by the flows' [`ProgressEvent`]s, shown only when stderr is a terminal.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use roomshard_core::{ProgressEvent, ProgressSink};

/// A [`ProgressSink`] that draws a rows bar and a media bar on a terminal, and does nothing
/// otherwise (pipes, files, tests).
pub struct Bars {
    inner: Option<Inner>,
}

struct Inner {
    _multi: MultiProgress,
    rows: ProgressBar,
    media: ProgressBar,
    /// Rows done per table (events carry per-table cumulative counts).
    tables: Mutex<BTreeMap<String, u64>>,
}

impl Bars {
    /// Bars labelled `what` (e.g. `decentralise general`), or none when stderr is not a
    /// terminal.
    pub fn new(what: &str) -> Bars {
        if !std::io::stderr().is_terminal() {
            return Bars { inner: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        // No length until the flow's `Planned` event says how much there is.
        let rows = multi.add(ProgressBar::no_length());
        let media = multi.add(ProgressBar::no_length());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} rows  {msg}")
        {
            rows.set_style(style.progress_chars("=> "));
        }
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}  {msg}",
        ) {
            media.set_style(style.progress_chars("=> "));
        }
        rows.set_prefix(what.to_string());
        media.set_prefix("media");
        Bars {
            inner: Some(Inner {
                _multi: multi,
                rows,
                media,
                tables: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Removes the bars (call before printing results).
    pub fn finish(&self) {
        if let Some(i) = &self.inner {
            i.rows.finish_and_clear();
            i.media.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}

impl ProgressSink for Bars {
    fn emit(&self, event: ProgressEvent) {
        let Some(i) = &self.inner else {
            return;
        };
        match event {
            ProgressEvent::Planned {
                rows,
                objects,
                bytes,
                ..
            } => {
                if rows == 0 {
                    // Nothing to count (a seed restores in one transaction): no rows bar.
                    i.rows.finish_and_clear();
                } else {
                    i.rows.set_length(rows);
                }
                i.media.set_length(bytes);
                i.media.set_message(format!("0/{objects} objects"));
            }
            ProgressEvent::Phase(phase) => {
                let name = serde_json::to_value(phase)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{phase:?}"));
                i.rows.set_message(name);
                if let Ok(mut t) = i.tables.lock() {
                    // A new phase (catch-up, cutover) counts its own rows from zero.
                    t.clear();
                }
                i.rows.set_position(0);
            }
            ProgressEvent::Rows { table, done, .. } => {
                if let Ok(mut t) = i.tables.lock() {
                    t.insert(table, done);
                    let sum: u64 = t.values().sum();
                    if sum > i.rows.length().unwrap_or(0) {
                        i.rows.set_length(sum);
                    }
                    i.rows.set_position(sum);
                }
            }
            ProgressEvent::Objects { done, total, bytes } => {
                if bytes > i.media.length().unwrap_or(0) {
                    i.media.set_length(bytes);
                }
                i.media.set_position(bytes);
                let total = total.map(|t| t.to_string()).unwrap_or_else(|| "?".into());
                i.media.set_message(format!("{done}/{total} objects"));
            }
            ProgressEvent::Finished => self.finish(),
            _ => {}
        }
    }
}
