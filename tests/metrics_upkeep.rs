//! The Prometheus recorder's histogram samples do not pile up when nobody scrapes: the
//! upkeep thread that `warden::prometheus::install` starts folds them into the histogram's
//! counts. Measured with a counting allocator (this test binary's own), so it is one test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use warden::supervisor::metrics::{DURATION_BUCKETS, DURATION_SUFFIX};

/// Bytes live on the heap of this test binary.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call forwards to the system allocator with the caller's arguments; only a
// counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SAMPLES: usize = 100_000;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Records `n` values into one histogram through `recorder` (not installed globally).
fn observe(recorder: &metrics_exporter_prometheus::PrometheusRecorder, n: usize) {
    metrics::with_local_recorder(recorder, || {
        let h = metrics::histogram!("warden_test_duration_seconds");
        for i in 0..n {
            h.record(i as f64 * 1e-6);
        }
    });
}

#[test]
fn histogram_samples_are_folded_by_the_upkeep_thread_not_held_until_a_scrape() {
    // The node's layout: `*_duration_seconds` are histograms with warden's buckets.
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix(DURATION_SUFFIX.into()), &DURATION_BUCKETS)
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let before = live();
    observe(&recorder, SAMPLES);
    let held = live() - before;
    // 8 bytes per f64 sample at least: without upkeep they are all still held.
    assert!(
        held >= (SAMPLES * 8) as isize,
        "the exporter no longer holds samples until upkeep ({held} bytes for {SAMPLES} samples): this test no longer tests anything"
    );

    // A node keeps observing while upkeep runs (the emptied sample blocks are freed once the
    // recording threads move on: epoch-based reclamation).
    warden::prometheus::spawn_upkeep(handle.clone(), Duration::from_millis(20)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut more = 0;
    while live() - before > held / 5 && Instant::now() < deadline {
        observe(&recorder, 100);
        more += 100;
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = live() - before;
    assert!(
        after <= held / 5,
        "{after} bytes still held 5 s after {SAMPLES} samples (were {held}): upkeep does not run"
    );
    // Folded, not lost: the histogram counts every sample.
    let text = handle.render();
    let count = format!("warden_test_duration_seconds_count {}", SAMPLES + more);
    assert!(text.contains(&count), "no `{count}` in\n{text}");
}
