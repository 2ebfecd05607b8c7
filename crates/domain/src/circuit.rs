//! The circuit breaker of one sending account, as a pure state machine.
//!
//! Invariants: while open, nothing is admitted until the cool-down has passed; then exactly
//! one probe is admitted at a time (half-open); the circuit closes only after the configured
//! number of consecutive successful probes, and any failed probe opens it again.

use chrono::{DateTime, Duration, Utc};

/// When a circuit opens and closes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitPolicy {
    /// Failure ratio over the window at which the circuit opens.
    pub failure_ratio: f64,
    /// Fewest calls in the window before the ratio counts.
    pub min_calls: usize,
    /// The sliding window of outcomes.
    pub window: Duration,
    /// How long the circuit stays open before a probe.
    pub cool_down: Duration,
    /// Consecutive successful probes that close it.
    pub close_after: u32,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_calls: 10,
            window: Duration::seconds(60),
            cool_down: Duration::seconds(30),
            close_after: 3,
        }
    }
}

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Sending normally.
    Closed,
    /// Sending nothing until `until`.
    Open {
        /// When a probe becomes possible.
        until: DateTime<Utc>,
    },
    /// Probing: one call at a time.
    HalfOpen {
        /// A probe is in flight.
        probing: bool,
        /// Consecutive successful probes so far.
        successes: u32,
    },
}

impl CircuitState {
    /// A short name for tables and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open { .. } => "open",
            CircuitState::HalfOpen { .. } => "half-open",
        }
    }
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Allowed,
    /// Go ahead as the half-open probe.
    Probe,
    /// Do not call before `until`.
    Denied {
        /// When to ask again.
        until: DateTime<Utc>,
    },
}

/// A state change, to log, count and alert on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened (failure ratio reached, or a probe failed).
    Opened,
    /// The circuit closed again.
    Closed,
}

/// One account's breaker: its policy, state and recent outcomes.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    policy: CircuitPolicy,
    state: CircuitState,
    outcomes: std::collections::VecDeque<(DateTime<Utc>, bool)>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(policy: CircuitPolicy) -> Self {
        Self {
            policy,
            state: CircuitState::Closed,
            outcomes: std::collections::VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Asks whether a call may start at `now`.
    pub fn admit(&mut self, now: DateTime<Utc>) -> Admission {
        match self.state {
            CircuitState::Closed => Admission::Allowed,
            CircuitState::Open { until } if now < until => Admission::Denied { until },
            CircuitState::Open { .. } => {
                self.state = CircuitState::HalfOpen {
                    probing: true,
                    successes: 0,
                };
                Admission::Probe
            }
            CircuitState::HalfOpen { probing: true, .. } => Admission::Denied {
                until: now + Duration::seconds(1),
            },
            CircuitState::HalfOpen {
                probing: false,
                successes,
            } => {
                self.state = CircuitState::HalfOpen {
                    probing: true,
                    successes,
                };
                Admission::Probe
            }
        }
    }

    /// Records a call's outcome (`ok` = the provider accepted or rejected the message for a
    /// recipient reason; failures are provider trouble). Returns a transition if one happened.
    pub fn record(&mut self, ok: bool, now: DateTime<Utc>) -> Option<Transition> {
        match self.state {
            CircuitState::HalfOpen { successes, .. } => {
                if ok {
                    let successes = successes + 1;
                    if successes >= self.policy.close_after {
                        self.state = CircuitState::Closed;
                        self.outcomes.clear();
                        return Some(Transition::Closed);
                    }
                    self.state = CircuitState::HalfOpen {
                        probing: false,
                        successes,
                    };
                    None
                } else {
                    self.state = CircuitState::Open {
                        until: now + self.policy.cool_down,
                    };
                    Some(Transition::Opened)
                }
            }
            CircuitState::Open { .. } => None,
            CircuitState::Closed => {
                self.outcomes.push_back((now, ok));
                while self
                    .outcomes
                    .front()
                    .is_some_and(|(t, _)| *t <= now - self.policy.window)
                {
                    self.outcomes.pop_front();
                }
                let calls = self.outcomes.len();
                let failures = self.outcomes.iter().filter(|(_, ok)| !ok).count();
                if calls >= self.policy.min_calls
                    && failures as f64 >= self.policy.failure_ratio * calls as f64
                {
                    self.state = CircuitState::Open {
                        until: now + self.policy.cool_down,
                    };
                    self.outcomes.clear();
                    Some(Transition::Opened)
                } else {
                    None
                }
            }
        }
    }

    /// Opens the circuit at once until `until` (e.g. the account's credentials were refused).
    pub fn trip(&mut self, until: DateTime<Utc>) -> Option<Transition> {
        let was_open = matches!(self.state, CircuitState::Open { .. });
        self.state = CircuitState::Open { until };
        self.outcomes.clear();
        (!was_open).then_some(Transition::Opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_770_000_000 + s, 0).unwrap()
    }

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            failure_ratio: 0.5,
            min_calls: 4,
            window: Duration::seconds(60),
            cool_down: Duration::seconds(30),
            close_after: 2,
        }
    }

    #[test]
    fn opens_on_failure_ratio_probes_after_cool_down_and_closes_after_successes() {
        let mut cb = CircuitBreaker::new(policy());
        assert_eq!(cb.record(true, t(0)), None);
        assert_eq!(cb.record(false, t(1)), None);
        assert_eq!(cb.record(true, t(2)), None);
        assert_eq!(
            cb.record(false, t(3)),
            Some(Transition::Opened),
            "2 of 4 failed"
        );
        assert_eq!(cb.admit(t(10)), Admission::Denied { until: t(33) });
        assert_eq!(cb.admit(t(33)), Admission::Probe);
        assert!(
            matches!(cb.admit(t(33)), Admission::Denied { .. }),
            "one probe at a time"
        );
        assert_eq!(cb.record(true, t(34)), None);
        assert_eq!(cb.admit(t(35)), Admission::Probe);
        assert_eq!(cb.record(true, t(36)), Some(Transition::Closed));
        assert_eq!(cb.admit(t(37)), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_and_old_failures_leave_the_window() {
        let mut cb = CircuitBreaker::new(policy());
        for i in 0..3 {
            cb.record(false, t(i));
        }
        // Outside the window the three failures no longer count.
        assert_eq!(cb.record(true, t(100)), None);
        assert_eq!(cb.state(), CircuitState::Closed);
        cb.trip(t(200));
        assert_eq!(cb.admit(t(200)), Admission::Probe);
        assert_eq!(cb.record(false, t(201)), Some(Transition::Opened));
        assert_eq!(cb.admit(t(202)), Admission::Denied { until: t(231) });
    }

    proptest! {
        /// Whatever happens, an open circuit admits nothing before its cool-down ends, and
        /// at most one probe is in flight.
        #[test]
        fn open_means_nothing_goes_out(events in proptest::collection::vec((0u8..3, 0i64..20), 1..200)) {
            let mut cb = CircuitBreaker::new(policy());
            let mut now = 0;
            let mut in_flight_probe = false;
            for (kind, dt) in events {
                now += dt;
                let before = cb.state();
                match kind {
                    0 => match cb.admit(t(now)) {
                        Admission::Allowed => prop_assert_eq!(before, CircuitState::Closed),
                        Admission::Probe => {
                            prop_assert!(!in_flight_probe);
                            if let CircuitState::Open { until } = before { prop_assert!(t(now) >= until); }
                            in_flight_probe = true;
                        }
                        Admission::Denied { .. } => {}
                    },
                    k => {
                        if matches!(before, CircuitState::HalfOpen { probing: true, .. }) || !matches!(before, CircuitState::HalfOpen { .. }) {
                            cb.record(k == 1, t(now));
                            in_flight_probe = false;
                        }
                    }
                }
            }
        }
    }
}
