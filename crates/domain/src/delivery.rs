//! The delivery ledger's state machine.
//!
//! Invariants: at most one live ledger row per (enrollment, step) — a step keeps one row per
//! channel it tried, every earlier one `failed` (a fallback); rows are never deleted; a row reaches
//! `Sending` before the provider is called, so a crash during the call leaves `Sending`,
//! which on lease expiry becomes `Unknown` — never silently resent. Only `Claimed` (the
//! provider was not called yet) goes back to `Planned` when its lease expires.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Decided and scheduled at its `send_at`.
    Planned,
    /// Taken by a worker under a lease and fencing token; the provider was not called yet.
    Claimed,
    /// The worker is calling the provider.
    Sending,
    /// The provider accepted the message.
    Sent,
    /// A transient failure; due again at `next_attempt_at`.
    RetryWait,
    /// A permanent failure; the last error is kept.
    Failed,
    /// The outcome is ambiguous (crash or timeout mid-send); held for reconciliation.
    Unknown,
    /// Not sent, on purpose: suppressed, replied, unsubscribed or halted before send.
    Cancelled,
    /// AI-written text waiting for a person's approval (a campaign in review mode); never
    /// claimed until approved.
    PendingReview,
}

/// What happens to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A worker claims a due row.
    Claim,
    /// The worker is about to call the provider.
    BeginSend,
    /// The provider accepted the message.
    Accept,
    /// A transient failure: try again later.
    Retry,
    /// A permanent failure.
    Fail,
    /// The provider may or may not have accepted the message.
    Ambiguous,
    /// The lease of a claim ran out before sending began.
    ClaimExpired,
    /// The lease ran out while sending.
    SendingExpired,
    /// The send is called off (suppression, reply, unsubscribe, halt).
    Cancel,
    /// A person confirmed an unknown delivery was sent.
    ResolveSent,
    /// A person asked to send an unknown delivery again.
    ResolveRetry,
    /// A person approved (possibly edited) a message held for review.
    Approve,
}

/// A transition not allowed from the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("delivery in state {from} cannot take transition {transition:?}")]
pub struct TransitionError {
    /// The state the delivery was in.
    pub from: DeliveryState,
    /// The refused transition.
    pub transition: Transition,
}

impl Transition {
    /// The states this transition may start from.
    pub fn allowed_from(self) -> &'static [DeliveryState] {
        use DeliveryState::*;
        match self {
            Transition::Claim => &[Planned, RetryWait],
            Transition::BeginSend => &[Claimed],
            Transition::Accept | Transition::Retry | Transition::Fail | Transition::Ambiguous => {
                &[Sending]
            }
            Transition::ClaimExpired => &[Claimed],
            Transition::SendingExpired => &[Sending],
            Transition::Cancel => &[Planned, RetryWait, Claimed, Unknown, PendingReview],
            Transition::ResolveSent | Transition::ResolveRetry => &[Unknown],
            Transition::Approve => &[PendingReview],
        }
    }

    /// The state this transition leads to.
    pub fn target(self) -> DeliveryState {
        use DeliveryState::*;
        match self {
            Transition::Claim => Claimed,
            Transition::BeginSend => Sending,
            Transition::Accept | Transition::ResolveSent => Sent,
            Transition::Retry => RetryWait,
            Transition::Fail => Failed,
            Transition::Ambiguous | Transition::SendingExpired => Unknown,
            Transition::ClaimExpired | Transition::ResolveRetry | Transition::Approve => Planned,
            Transition::Cancel => Cancelled,
        }
    }
}

impl DeliveryState {
    /// All states, in lifecycle order.
    pub const ALL: [DeliveryState; 9] = [
        DeliveryState::Planned,
        DeliveryState::Claimed,
        DeliveryState::Sending,
        DeliveryState::Sent,
        DeliveryState::RetryWait,
        DeliveryState::Failed,
        DeliveryState::Unknown,
        DeliveryState::Cancelled,
        DeliveryState::PendingReview,
    ];

    /// Applies a transition, refusing the ones the state machine does not allow.
    pub fn apply(self, transition: Transition) -> Result<DeliveryState, TransitionError> {
        if transition.allowed_from().contains(&self) {
            Ok(transition.target())
        } else {
            Err(TransitionError {
                from: self,
                transition,
            })
        }
    }

    /// Whether no further transition can happen without a person.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Sent | DeliveryState::Failed | DeliveryState::Cancelled
        )
    }

    /// The lower-case name used in storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Planned => "planned",
            DeliveryState::Claimed => "claimed",
            DeliveryState::Sending => "sending",
            DeliveryState::Sent => "sent",
            DeliveryState::RetryWait => "retry_wait",
            DeliveryState::Failed => "failed",
            DeliveryState::Unknown => "unknown",
            DeliveryState::Cancelled => "cancelled",
            DeliveryState::PendingReview => "pending_review",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unrecognized stored state name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown delivery state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for DeliveryState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use DeliveryState::*;

    const TRANSITIONS: [Transition; 12] = [
        Transition::Claim,
        Transition::BeginSend,
        Transition::Accept,
        Transition::Retry,
        Transition::Fail,
        Transition::Ambiguous,
        Transition::ClaimExpired,
        Transition::SendingExpired,
        Transition::Cancel,
        Transition::ResolveSent,
        Transition::ResolveRetry,
        Transition::Approve,
    ];

    #[test]
    fn happy_path_and_crash_paths() {
        let s = Planned.apply(Transition::Claim).unwrap();
        assert_eq!(s, Claimed);
        assert_eq!(s.apply(Transition::ClaimExpired).unwrap(), Planned);
        let sending = s.apply(Transition::BeginSend).unwrap();
        assert_eq!(sending.apply(Transition::SendingExpired).unwrap(), Unknown);
        assert_eq!(sending.apply(Transition::Accept).unwrap(), Sent);
        assert_eq!(sending.apply(Transition::Retry).unwrap(), RetryWait);
        assert_eq!(RetryWait.apply(Transition::Claim).unwrap(), Claimed);
    }

    #[test]
    fn a_sending_row_is_never_put_back_in_the_queue_by_expiry() {
        assert!(Sending.apply(Transition::ClaimExpired).is_err());
        assert!(Sending.apply(Transition::Cancel).is_err());
        assert!(Sending.apply(Transition::Claim).is_err());
    }

    #[test]
    fn a_message_held_for_review_is_only_sent_after_approval() {
        assert!(PendingReview.apply(Transition::Claim).is_err());
        assert!(PendingReview.apply(Transition::BeginSend).is_err());
        assert_eq!(PendingReview.apply(Transition::Approve).unwrap(), Planned);
        assert_eq!(PendingReview.apply(Transition::Cancel).unwrap(), Cancelled);
        assert!(Planned.apply(Transition::Approve).is_err());
    }

    #[test]
    fn names_round_trip() {
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse::<DeliveryState>().unwrap(), state);
        }
        assert!("bogus".parse::<DeliveryState>().is_err());
    }

    proptest! {
        /// Whatever sequence of transitions is attempted, a row is sent at most once, a final
        /// state is never left (except Unknown by a person), and the provider is only ever
        /// called (BeginSend) from a claimed row.
        #[test]
        fn at_most_one_send(steps in proptest::collection::vec(0usize..TRANSITIONS.len(), 0..60)) {
            let mut state = Planned;
            let mut sends = 0;
            for i in steps {
                let t = TRANSITIONS[i];
                match state.apply(t) {
                    Ok(next) => {
                        if next == Sent { sends += 1; }
                        prop_assert!(!state.is_final(), "left final state {state} by {t:?}");
                        if t == Transition::BeginSend { prop_assert_eq!(state, Claimed); }
                        state = next;
                    }
                    Err(e) => prop_assert_eq!(e.from, state),
                }
            }
            prop_assert!(sends <= 1);
        }
    }
}
