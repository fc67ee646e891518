//! Figures, the result table and its JSON form.

use serde::Serialize;
use std::fmt::Write as _;

/// Which direction is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Larger values are better (rates).
    Higher,
    /// Smaller values are better (times, bytes, moved slots).
    Lower,
}

/// A goal a figure is checked against.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// Human form, e.g. "≥ 100000 conn/s".
    pub text: String,
    /// Met?
    pub met: bool,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Benchmark (section) name.
    pub bench: String,
    /// What was measured.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Unit of `value` and `baseline`.
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// Baseline value measured in the same run (or a quoted reference when `baseline_what`
    /// says so).
    pub baseline: Option<f64>,
    /// What the baseline is.
    pub baseline_what: String,
    /// Improvement factor over the baseline: value/baseline when higher is better,
    /// baseline/value when lower is better (> 1 = better than the baseline).
    pub ratio: Option<f64>,
    /// Goal, if the project set one for this figure.
    pub goal: Option<Goal>,
    /// Remarks.
    pub note: String,
}

impl Figure {
    /// A figure without baseline or goal.
    pub fn new(
        bench: &str,
        name: impl Into<String>,
        value: f64,
        unit: &str,
        better: Better,
    ) -> Self {
        Figure {
            bench: bench.into(),
            name: name.into(),
            value,
            unit: unit.into(),
            better,
            baseline: None,
            baseline_what: String::new(),
            ratio: None,
            goal: None,
            note: String::new(),
        }
    }

    /// Sets the baseline and computes the ratio.
    pub fn baseline(mut self, value: f64, what: impl Into<String>) -> Self {
        self.baseline = Some(value);
        self.baseline_what = what.into();
        self.ratio = ratio(self.value, value, self.better);
        self
    }

    /// Sets a goal: the figure must be `≥ bound` (Higher) or `≤ bound` (Lower).
    pub fn goal(mut self, bound: f64, text: impl Into<String>) -> Self {
        let met = match self.better {
            Better::Higher => self.value >= bound,
            Better::Lower => self.value <= bound,
        };
        self.goal = Some(Goal {
            text: text.into(),
            met,
        });
        self
    }

    /// Sets a goal whose outcome was decided by the caller.
    pub fn goal_met(mut self, met: bool, text: impl Into<String>) -> Self {
        self.goal = Some(Goal {
            text: text.into(),
            met,
        });
        self
    }

    /// Adds a note.
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = n.into();
        self
    }
}

fn ratio(value: f64, baseline: f64, better: Better) -> Option<f64> {
    let r = match better {
        Better::Higher => value / baseline,
        Better::Lower => baseline / value,
    };
    r.is_finite().then_some(r)
}

/// Number formatting for the table: 3-4 significant digits.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// Renders figures as an aligned text table.
pub fn table(figs: &[Figure]) -> String {
    let head = [
        "bench", "figure", "value", "unit", "baseline", "ratio", "goal", "met",
    ];
    let rows: Vec<[String; 8]> = figs
        .iter()
        .map(|f| {
            [
                f.bench.clone(),
                f.name.clone(),
                num(f.value),
                f.unit.clone(),
                f.baseline.map(num).unwrap_or_else(|| "-".into()),
                f.ratio
                    .map(|r| format!("{}x", num(r)))
                    .unwrap_or_else(|| "-".into()),
                f.goal.as_ref().map(|g| g.text.clone()).unwrap_or_default(),
                match &f.goal {
                    Some(g) if g.met => "yes".into(),
                    Some(_) => "NO".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut w = [0usize; 8];
    for r in std::iter::once(&head.map(String::from)).chain(rows.iter()) {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, r: &[String; 8]| {
        for (i, c) in r.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if (2..=5).contains(&i) && i != 3 {
                let _ = write!(out, "{}{}  ", " ".repeat(pad), c);
            } else {
                let _ = write!(out, "{}{}  ", c, " ".repeat(pad));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&mut out, &head.map(String::from));
    let total: usize = w.iter().sum::<usize>() + 2 * 7;
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in &rows {
        line(&mut out, r);
    }
    // Baselines and notes under the table, numbered by row.
    out.push('\n');
    for (i, f) in figs.iter().enumerate() {
        if f.baseline_what.is_empty() && f.note.is_empty() {
            continue;
        }
        let _ = write!(out, "[{:>2}] {} / {}:", i + 1, f.bench, f.name);
        if !f.baseline_what.is_empty() {
            let _ = write!(out, " baseline = {}.", f.baseline_what);
        }
        if !f.note.is_empty() {
            let _ = write!(out, " {}", f.note);
        }
        out.push('\n');
    }
    out
}

/// The JSON document written by `--json`.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    /// Size preset.
    pub size: &'a str,
    /// Load averages (1, 5, 15 min) at start and end of the run.
    pub loadavg_start: [f64; 3],
    /// At the end.
    pub loadavg_end: [f64; 3],
    /// CPUs.
    pub cpus: usize,
    /// Figures.
    pub figures: &'a [Figure],
    /// Sections that failed, with the error.
    pub errors: &'a [(String, String)],
}

/// `/proc/loadavg`.
pub fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|x| x.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_direction_and_goal() {
        let f = Figure::new("x", "rate", 200.0, "1/s", Better::Higher)
            .baseline(100.0, "b")
            .goal(150.0, "≥ 150");
        assert_eq!(f.ratio, Some(2.0));
        assert!(f.goal.as_ref().unwrap().met);
        let f = Figure::new("x", "time", 2.0, "ms", Better::Lower)
            .baseline(8.0, "b")
            .goal(1.0, "≤ 1");
        assert_eq!(f.ratio, Some(4.0));
        assert!(!f.goal.as_ref().unwrap().met);
        let t = table(&[f]);
        assert!(t.contains("NO") && t.contains("4.00x"), "{t}");
    }
}
