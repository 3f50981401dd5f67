//! Retry budget: retries may add at most a percentage of the original
//! requests, so when every endpoint fails, retries cannot multiply the load
//! (Linkerd's and Finagle's budget). A small reserve lets a quiet service
//! retry its first failures.

use std::sync::Mutex;

/// Retries allowed before any request has paid into the budget.
const RESERVE: f64 = 10.0;
/// The most the balance can hold, so a long healthy spell does not bank an
/// unlimited burst of retries for the next outage.
const MAX_BALANCE: f64 = 100.0;

pub struct RetryBudget {
    /// Retries one original request pays for (percent / 100).
    ratio: f64,
    balance: Mutex<f64>,
}

impl RetryBudget {
    pub fn new(percent: f64) -> Self {
        RetryBudget {
            ratio: percent / 100.0,
            balance: Mutex::new(RESERVE),
        }
    }

    /// An original request (not a retry) was made.
    pub fn deposit(&self) {
        let mut b = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        *b = (*b + self.ratio).min(MAX_BALANCE.max(RESERVE));
    }

    /// May one retry be made now? Takes its cost when so.
    pub fn try_withdraw(&self) -> bool {
        let mut b = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        if *b >= 1.0 {
            *b -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_percentage_plus_reserve() {
        let b = RetryBudget::new(20.0);
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            while b.try_withdraw() {
                retries += 1;
            }
        }
        assert!(retries <= 210, "{retries}");
        assert!(retries >= 200, "{retries}");
    }
}
