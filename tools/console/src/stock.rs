//! Stock and sales as the inventory database holds them, and the conservation check,
//! pure: rows in, verdicts out. (The rows are read by `sources`.)

use inventory_service::repository::Drift;
use serde::Serialize;

/// One SKU's row of `stock`, with what its reservation rows add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockRow {
    pub sku: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    /// What available + reserved + sold must add up to (fixed when the stock was set).
    pub stocked: i64,
    /// The highest fencing token a fenced write (`mutex`) was accepted with.
    pub fence_token: i64,
    /// Units on RESERVED / COMMITTED reservations.
    pub lines_reserved: i64,
    pub lines_committed: i64,
    /// Strategies that reserved this SKU, sorted.
    pub strategies: Vec<String>,
}

/// The verdict on one SKU: do its units still add up?
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conservation {
    pub sku: String,
    /// available + reserved + sold.
    pub accounted: i64,
    pub stocked: i64,
    /// Units promised beyond the stock (inventory's own `Drift::oversold`).
    pub oversold: i64,
    pub ok: bool,
    /// What is wrong, for people; empty when ok.
    pub problem: String,
}

impl StockRow {
    pub fn conservation(&self) -> Conservation {
        let accounted = self.available + self.reserved + self.sold;
        let oversold = Drift {
            sku: self.sku.clone(),
            available: self.available,
            total: self.stocked,
            reserved: self.reserved,
            sold: self.sold,
            lines_reserved: self.lines_reserved,
            lines_committed: self.lines_committed,
        }
        .oversold();
        let mut problems = Vec::new();
        if accounted != self.stocked {
            problems.push(format!(
                "available {} + reserved {} + sold {} = {accounted}, but {} were stocked",
                self.available, self.reserved, self.sold, self.stocked
            ));
        }
        if oversold > 0 {
            problems.push(format!("{oversold} units oversold"));
        }
        Conservation {
            sku: self.sku.clone(),
            accounted,
            stocked: self.stocked,
            oversold,
            ok: problems.is_empty(),
            problem: problems.join("; "),
        }
    }
}

/// A flash sale's row, and what each customer holds in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SaleRow {
    pub sale: String,
    /// 0: no limit.
    pub per_customer_limit: i64,
    pub open: bool,
    pub customers: Vec<CustomerUnits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerUnits {
    pub customer: String,
    pub units: i64,
    /// Holds more than the sale's limit (`none` can do that).
    pub over_limit: bool,
}

impl SaleRow {
    /// Marks the customers over the limit.
    pub fn judged(mut self) -> SaleRow {
        for c in &mut self.customers {
            c.over_limit = self.per_customer_limit > 0 && c.units > self.per_customer_limit;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(available: i64, reserved: i64, sold: i64, stocked: i64) -> StockRow {
        StockRow {
            sku: "tea".into(),
            available,
            reserved,
            sold,
            stocked,
            fence_token: 0,
            lines_reserved: reserved,
            lines_committed: sold,
            strategies: vec![],
        }
    }

    #[test]
    fn units_that_add_up_pass_and_a_lost_update_fails() {
        assert!(row(5, 3, 2, 10).conservation().ok);
        // `none`: two buyers read available 10 and each wrote 10 - 1; reserved went up twice.
        let broken = row(9, 2, 0, 10).conservation();
        assert!(!broken.ok);
        assert_eq!(broken.accounted, 11);
        assert!(
            broken.problem.contains("= 11, but 10 were stocked"),
            "{}",
            broken.problem
        );
        // Oversold: more promised than stocked.
        let oversold = row(0, 12, 0, 10).conservation();
        assert_eq!(oversold.oversold, 2);
        assert!(oversold.problem.contains("2 units oversold"));
    }

    #[test]
    fn customers_over_the_limit_are_marked() {
        let sale = SaleRow {
            sale: "s".into(),
            per_customer_limit: 2,
            open: true,
            customers: vec![
                CustomerUnits {
                    customer: "a".into(),
                    units: 2,
                    over_limit: false,
                },
                CustomerUnits {
                    customer: "b".into(),
                    units: 3,
                    over_limit: false,
                },
            ],
        }
        .judged();
        assert!(!sale.customers[0].over_limit);
        assert!(sale.customers[1].over_limit);
    }
}
