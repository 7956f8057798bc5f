//! One results table for every section: rows of `{section, case, metric, value, unit,
//! baseline, ratio, note}`, printed as a table and written as JSON.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use serde_json::json;

/// One figure. `value` is `None` when the case could not be measured (`note` says why,
/// starting with "n/a:"); `ratio` is `value / baseline's value`.
#[derive(Clone, Debug)]
pub struct Row {
    pub section: String,
    pub case: String,
    pub metric: String,
    pub value: Option<f64>,
    pub unit: String,
    pub baseline: Option<String>,
    pub ratio: Option<f64>,
    pub note: String,
}

impl Row {
    pub fn new(section: &str, case: &str, metric: &str, value: f64, unit: &str) -> Self {
        Row {
            section: section.to_owned(),
            case: case.to_owned(),
            metric: metric.to_owned(),
            value: Some(value),
            unit: unit.to_owned(),
            baseline: None,
            ratio: None,
            note: String::new(),
        }
    }

    /// A case that could not be measured, and why.
    pub fn unavailable(section: &str, case: &str, metric: &str, unit: &str, why: &str) -> Self {
        Row {
            value: None,
            note: format!("n/a: {why}"),
            ..Row::new(section, case, metric, 0.0, unit)
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        let note = note.into();
        if self.note.is_empty() {
            self.note = note;
        } else if !note.is_empty() {
            self.note = format!("{}; {note}", self.note);
        }
        self
    }
}

/// The rows of one run, in the order they were measured.
#[derive(Default)]
pub struct Results {
    rows: Vec<Row>,
}

impl Results {
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    pub fn push(&mut self, row: Row) {
        println!("  {}", row_line(&row));
        self.rows.push(row);
    }

    /// Adds `row` with its ratio to the row `baseline_case` of the same section and metric.
    /// A missing or unmeasured baseline leaves the ratio empty and says so in the note.
    pub fn push_vs(&mut self, row: Row, baseline_case: &str) {
        let metric = row.metric.clone();
        self.push_vs_metric(row, baseline_case, &metric);
    }

    /// Like [`Results::push_vs`], against the baseline's `baseline_metric`.
    pub fn push_vs_metric(&mut self, mut row: Row, baseline_case: &str, baseline_metric: &str) {
        row.baseline = Some(baseline_case.to_owned());
        match (
            row.value,
            self.value(&row.section, baseline_case, baseline_metric),
        ) {
            (Some(v), Some(b)) if b > 0.0 => row.ratio = Some(v / b),
            (Some(_), _) => row = row.note("baseline not measured"),
            _ => {}
        }
        self.push(row);
    }

    pub fn value(&self, section: &str, case: &str, metric: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.section == section && r.case == case && r.metric == metric)
            .and_then(|r| r.value)
    }

    /// The table as text: one Markdown table per section.
    pub fn table(&self) -> String {
        let mut sections: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !sections.contains(&r.section.as_str()) {
                sections.push(&r.section);
            }
        }
        let mut out = String::new();
        for section in sections {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.section == section).collect();
            let _ = writeln!(out, "\n### {section}\n");
            out += &section_table(&rows);
        }
        out
    }

    /// Writes `{machine, quick, ..., rows: [...]}` to `path`, creating its directory.
    pub fn write_json(&self, path: &Path, meta: serde_json::Value) -> Result<()> {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "section": r.section,
                    "case": r.case,
                    "metric": r.metric,
                    "value": r.value,
                    "unit": r.unit,
                    "baseline": r.baseline,
                    "ratio": r.ratio,
                    "note": r.note,
                })
            })
            .collect();
        let mut doc = meta;
        doc["rows"] = json!(rows);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// The longest note a table shows; results.json keeps it whole. A failed section's note
/// can hold a whole verifier log, and a format width past `u16::MAX` panics.
const MAX_TABLE_NOTE: usize = 2000;

/// `note` on one line of at most [`MAX_TABLE_NOTE`] characters.
fn table_cell(note: &str) -> String {
    let one_line = note.replace('\n', " ");
    match one_line.char_indices().nth(MAX_TABLE_NOTE) {
        Some((cut, _)) => format!("{}... (cut; whole in results.json)", &one_line[..cut]),
        None => one_line,
    }
}

fn section_table(rows: &[&Row]) -> String {
    let headers = ["case", "metric", "value", "ratio", "baseline", "note"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.case.clone(),
                r.metric.clone(),
                r.value
                    .map(|v| format_value(v, &r.unit))
                    .unwrap_or_else(|| "n/a".into()),
                r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default(),
                r.baseline.clone().unwrap_or_default(),
                table_cell(&r.note),
            ]
        })
        .collect();
    let mut width = headers.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::from("|");
        for (i, (w, cell)) in width.iter().zip(c).enumerate() {
            // Numbers right-aligned, text left-aligned.
            if i == 2 || i == 3 {
                let _ = write!(s, " {cell:>w$} |");
            } else {
                let _ = write!(s, " {cell:<w$} |");
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&headers.map(String::from));
    let rule: Vec<String> = width
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == 2 || i == 3 {
                format!("{}:", "-".repeat(w - 1))
            } else {
                "-".repeat(*w)
            }
        })
        .collect();
    out += &line(&rule);
    for c in &cells {
        out += &line(c);
    }
    out
}

/// A value with its unit, scaled for reading (packets/s in Mpps).
pub fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "ns" => format!("{v:.1} ns"),
        "pps" => format!("{:.2} Mpps", v / 1e6),
        "s" => format!("{v:.2} s"),
        "x" => format!("{v:.2}x"),
        "" => format!("{v}"),
        u => format!("{v:.2} {u}"),
    }
}

/// How a row reads in the progress output.
fn row_line(r: &Row) -> String {
    let value = r
        .value
        .map(|v| format_value(v, &r.unit))
        .unwrap_or_else(|| "n/a".into());
    let mut s = format!("{} | {}: {value}", r.case, r.metric);
    if let (Some(b), Some(x)) = (&r.baseline, r.ratio) {
        let _ = write!(s, " ({x:.2}x {b})");
    }
    if !r.note.is_empty() {
        let _ = write!(s, " [{}]", r.note);
    }
    s
}

/// The median (mean of the middle two for an even count); `None` for no samples.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratio_to_a_baseline_of_the_same_section() {
        let mut r = Results::default();
        r.push(Row::new("s", "base", "ns/packet", 20.0, "ns"));
        r.push_vs(Row::new("s", "prog", "ns/packet", 30.0, "ns"), "base");
        r.push_vs(Row::new("s", "other", "ns/packet", 30.0, "ns"), "missing");
        assert_eq!(r.rows()[1].ratio, Some(1.5));
        assert_eq!(r.rows()[2].ratio, None);
        assert!(r.rows()[2].note.contains("baseline"));
        assert!(r.table().contains("1.50x"));
    }

    #[test]
    fn a_huge_multi_line_note_is_cut_in_the_table_and_kept_in_the_row() {
        let mut r = Results::default();
        let log = "0: R1=ctx() R10=fp0\n".repeat(10_000);
        r.push(Row::new("s", "section failed", "", f64::NAN, "").note(log.clone()));
        let table = r.table();
        assert!(table.contains("cut; whole in results.json"));
        assert!(table
            .lines()
            .all(|l| l.chars().count() < 3 * MAX_TABLE_NOTE));
        assert_eq!(r.rows()[0].note, log);
    }
}
