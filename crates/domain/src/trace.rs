//! Decision traces: which gates ran for a (lead, step) evaluation, and why the outcome is
//! what it is. `engager explain` prints them.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::campaign::Channel;

/// A stage of the decision pipeline (and the dispatcher's re-check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gate {
    /// Suppression, unsubscribe state and lead status.
    Compliance,
    /// Minimum gap and weekly cap across campaigns.
    Frequency,
    /// Which channel reaches the lead.
    Channel,
    /// Rendering the step's template for the lead.
    Personalization,
    /// Footer, headers, length and wording checks of the rendered message.
    Content,
    /// Send window in the lead's time zone.
    Timing,
    /// The dispatcher's re-check just before sending.
    Dispatch,
}

impl Gate {
    /// The lower-case name used in storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Compliance => "compliance",
            Gate::Frequency => "frequency",
            Gate::Channel => "channel",
            Gate::Personalization => "personalization",
            Gate::Content => "content",
            Gate::Timing => "timing",
            Gate::Dispatch => "dispatch",
        }
    }

    /// Parses a stored gate name.
    pub fn parse(s: &str) -> Option<Gate> {
        [
            Gate::Compliance,
            Gate::Frequency,
            Gate::Channel,
            Gate::Personalization,
            Gate::Content,
            Gate::Timing,
            Gate::Dispatch,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One gate's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateResult {
    /// The gate.
    pub gate: Gate,
    /// Whether the lead passed it.
    pub passed: bool,
    /// A sentence saying why.
    pub reason: String,
}

impl GateResult {
    /// A passed gate.
    pub fn pass(gate: Gate, reason: impl Into<String>) -> Self {
        Self {
            gate,
            passed: true,
            reason: reason.into(),
        }
    }

    /// A failed gate.
    pub fn fail(gate: Gate, reason: impl Into<String>) -> Self {
        Self {
            gate,
            passed: false,
            reason: reason.into(),
        }
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A delivery was planned.
    Planned {
        /// The chosen channel.
        channel: Channel,
        /// When it is due.
        send_at: DateTime<Utc>,
    },
    /// Not yet: evaluate again at `until`.
    Deferred {
        /// When to evaluate again.
        until: DateTime<Utc>,
    },
    /// This step is skipped for this lead; the sequence goes on with the next step.
    Skipped {
        /// A short machine-readable reason (`no_channel`, `render_error`, ...).
        code: String,
    },
    /// The lead's sequence ends here.
    Stopped {
        /// A short machine-readable reason (`suppressed`, `unsubscribed`, ...).
        code: String,
    },
}

impl Outcome {
    /// The outcome's name: planned, deferred, skipped or stopped.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Planned { .. } => "planned",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Stopped { .. } => "stopped",
        }
    }
}

/// The full trace of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The gates in the order they ran.
    pub gates: Vec<GateResult>,
    /// What came of it.
    pub outcome: Outcome,
}
