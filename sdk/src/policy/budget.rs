//! A retry budget: a token bucket that retries draw from and successes refill (smithy-rs's
//! standard quota: 500 tokens, 5 per retry, 10 per retry after a timeout, 1 back per
//! success). When the broker is down for everyone, retries stop instead of multiplying load.

/// What kind of failure a retry follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// A transient error answered by the broker.
    Error,
    /// No answer at all.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    pub capacity: u32,
    pub retry_cost: u32,
    pub timeout_retry_cost: u32,
    pub success_refund: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            capacity: 500,
            retry_cost: 5,
            timeout_retry_cost: 10,
            success_refund: 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: BudgetConfig,
    tokens: u32,
}

impl RetryBudget {
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            tokens: config.capacity,
        }
    }

    /// Takes the cost of one retry; `false` means the budget is spent: do not retry.
    pub fn try_retry(&mut self, kind: RetryKind) -> bool {
        let cost = match kind {
            RetryKind::Error => self.config.retry_cost,
            RetryKind::Timeout => self.config.timeout_retry_cost,
        };
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }

    /// A success refills a little.
    pub fn on_success(&mut self) {
        self.tokens = (self.tokens + self.config.success_refund).min(self.config.capacity);
    }

    pub fn tokens(&self) -> u32 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_cut_off_and_successes_restore_it() {
        let mut budget = RetryBudget::new(BudgetConfig::default());
        let retries = (0..1_000)
            .take_while(|_| budget.try_retry(RetryKind::Error))
            .count();
        assert_eq!(retries, 100, "500 tokens at 5 each");
        assert!(!budget.try_retry(RetryKind::Timeout));
        for _ in 0..10 {
            budget.on_success();
        }
        assert!(
            budget.try_retry(RetryKind::Timeout),
            "ten successes pay for one timeout retry"
        );
        assert!(!budget.try_retry(RetryKind::Error));
        for _ in 0..10_000 {
            budget.on_success();
        }
        assert_eq!(budget.tokens(), 500, "never above capacity");
    }
}
