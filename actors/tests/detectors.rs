//! Precision/recall of the built-in detectors on labelled corpora.
//!
//! Each corpus is JSON lines, `{"text": …, "label": true|false, "note": …}`, one file per
//! detector under `tests/data/detectors/`. The test prints precision, recall, the confusion
//! counts and every misclassified line, and requires precision >= 0.95 and recall >= 0.90.

use warden_actors::policy::detect::{Detector, Hit};

const MIN_PRECISION: f64 = 0.95;
const MIN_RECALL: f64 = 0.90;

struct Line {
    number: usize,
    text: String,
    label: bool,
    note: String,
}

fn load(detector: Detector) -> Vec<Line> {
    let path = format!(
        "{}/tests/data/detectors/{}.jsonl",
        env!("CARGO_MANIFEST_DIR"),
        detector.name()
    );
    let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    body.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1));
            Line {
                number: i + 1,
                text: v["text"].as_str().expect("text is a string").to_owned(),
                label: v["label"].as_bool().expect("label is a bool"),
                note: v["note"].as_str().unwrap_or("").to_owned(),
            }
        })
        .collect()
}

struct Score {
    tp: usize,
    fp: usize,
    tn: usize,
    fn_: usize,
}

impl Score {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
}

fn evaluate(detector: Detector) -> Score {
    let lines = load(detector);
    let mut score = Score {
        tp: 0,
        fp: 0,
        tn: 0,
        fn_: 0,
    };
    let mut wrong = Vec::new();
    for line in &lines {
        let hit: Option<Hit> = detector.find(&line.text);
        if let Some(h) = &hit {
            assert_eq!(h.detector, detector);
            assert!(
                h.start < h.end && h.end <= line.text.len(),
                "bad span {h:?}"
            );
            assert!(line.text.is_char_boundary(h.start) && line.text.is_char_boundary(h.end));
        }
        match (hit.is_some(), line.label) {
            (true, true) => score.tp += 1,
            (false, false) => score.tn += 1,
            (true, false) => {
                score.fp += 1;
                wrong.push(format!(
                    "  FP line {}: [{}] {:?} -> {:?}",
                    line.number, line.note, line.text, hit
                ));
            }
            (false, true) => {
                score.fn_ += 1;
                wrong.push(format!(
                    "  FN line {}: [{}] {:?}",
                    line.number, line.note, line.text
                ));
            }
        }
    }
    println!(
        "{}: {} lines ({} positive), precision {:.3}, recall {:.3} (tp {}, fp {}, tn {}, fn {})",
        detector.name(),
        lines.len(),
        lines.iter().filter(|l| l.label).count(),
        score.precision(),
        score.recall(),
        score.tp,
        score.fp,
        score.tn,
        score.fn_
    );
    for w in &wrong {
        println!("{w}");
    }
    score
}

fn check(detector: Detector) {
    let s = evaluate(detector);
    assert!(
        s.precision() >= MIN_PRECISION,
        "{} precision {:.3} < {MIN_PRECISION}",
        detector.name(),
        s.precision()
    );
    assert!(
        s.recall() >= MIN_RECALL,
        "{} recall {:.3} < {MIN_RECALL}",
        detector.name(),
        s.recall()
    );
}

#[test]
fn pii_precision_recall() {
    check(Detector::Pii);
}

#[test]
fn secrets_precision_recall() {
    check(Detector::Secrets);
}

#[test]
fn prompt_injection_precision_recall() {
    check(Detector::PromptInjection);
}

#[test]
fn corpora_are_large_enough_and_balanced() {
    for d in Detector::ALL {
        let lines = load(d);
        let pos = lines.iter().filter(|l| l.label).count();
        assert!(lines.len() >= 60, "{}: {} lines", d.name(), lines.len());
        let share = pos as f64 / lines.len() as f64;
        assert!(
            (0.3..=0.5).contains(&share),
            "{}: {share:.2} positive",
            d.name()
        );
    }
}

/// A typical benign tool-call argument string (~200 bytes, no hit for any detector).
const BENIGN_ARGS: &str = r###"{"tool":"fs.write","path":"/home/agent/work/report-2024-06-11.md","content":"## Summary\nBuild passed on commit 3f78685 after 12 retries; see logs/ci/run-4821.txt.","mode":"overwrite","append":false}"###;

#[test]
fn typical_benign_tool_args_hit_no_detector() {
    for d in Detector::ALL {
        assert_eq!(
            d.find(BENIGN_ARGS),
            None,
            "{} hit the benign sample",
            d.name()
        );
    }
}
