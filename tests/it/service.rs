//! `pulse demo` (the README's "run the main job"): it serves every KPI within a minute of
//! starting, stays ready, and stops cleanly on SIGTERM.

use std::time::Duration;

use crate::process::{Pulse, metric};

#[test]
fn demo_serves_the_kpis_and_stops_cleanly() {
    let pulse = Pulse::start(&["demo", "--users", "200"]);
    pulse.wait_for_status("/readyz", 200, Duration::from_secs(60));
    let snapshot = pulse.wait_for("a populated month", Duration::from_secs(30), |s| {
        s["active_users"]["30d"].as_u64().unwrap_or(0) > 100
    });
    assert!(
        snapshot["active_users_previous"]["30d"].as_u64().unwrap() > 100,
        "history is backfilled"
    );
    assert!(snapshot["sessions"]["30d"]["count"].as_u64().unwrap() > 0);
    let (status, metrics) = pulse.get("/metrics");
    assert_eq!(status, 200);
    for series in [
        "pulse_active_users{window=\"1d\"}",
        "pulse_stickiness_ratio{ratio=\"dau_mau\"}",
        "pulse_session_bounce_ratio{window=\"7d\"}",
        "pulse_ready",
    ] {
        assert!(
            metric(&metrics, series).is_some(),
            "{series} missing from /metrics"
        );
    }
    assert_eq!(pulse.get("/healthz").0, 200);
    assert!(pulse.stop(Duration::from_secs(30)).success());
}
