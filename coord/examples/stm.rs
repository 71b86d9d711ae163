//! A bank on etcd: four tellers move money between five accounts at the same time,
//! each transfer one STM transaction. Conflicting transfers are re-run automatically,
//! an overdraft is aborted as a business outcome, and the total never changes.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example stm
//! ```

use std::fmt;

use coord::stm::{self, Options};
use coord::Error;

/// Why a transfer did not happen.
#[derive(Debug)]
enum TransferError {
    /// Business outcome: the payer's balance is too low. Nothing was written.
    InsufficientFunds { account: String, balance: i64 },
    /// Infrastructure: etcd failed, or the transfer kept conflicting.
    Coord(Error),
}

impl From<Error> for TransferError {
    fn from(e: Error) -> TransferError {
        TransferError::Coord(e)
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::InsufficientFunds { account, balance } => {
                write!(f, "{account} has only {balance}")
            }
            TransferError::Coord(e) => write!(f, "{e}"),
        }
    }
}

/// Moves `amount` from `from` to `to` atomically; returns the payer's new balance.
async fn transfer(
    client: &coord::etcd_client::Client,
    from: &str,
    to: &str,
    amount: i64,
) -> Result<stm::Committed<i64>, TransferError> {
    // snippet-start: usage
    // Both balances are always read: prefetch them in one request.
    let options = Options::new().prefetch([from, to]);
    stm::run(client, options, |tx| async move {
        let payer: i64 = tx.get_as(from).await?.unwrap_or(0);
        let payee: i64 = tx.get_as(to).await?.unwrap_or(0);
        if payer < amount {
            return Err(TransferError::InsufficientFunds {
                account: from.to_owned(),
                balance: payer,
            });
        }
        tx.put(from, (payer - amount).to_string());
        tx.put(to, (payee + amount).to_string());
        Ok(payer - amount)
    })
    .await
    // snippet-end: usage
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let bank = format!("/examples/stm/{}", std::process::id());
    let accounts: Vec<String> = (0..5).map(|i| format!("{bank}/account-{i}")).collect();
    for account in &accounts {
        client.clone().put(account.as_str(), "100", None).await?;
    }
    println!("5 accounts with 100 each, total 500");

    let mut tellers = Vec::new();
    for teller in 0..4usize {
        let (client, accounts) = (client.clone(), accounts.clone());
        tellers.push(tokio::spawn(async move {
            let (mut done, mut refused, mut retried) = (0, 0, 0);
            for round in 0..20usize {
                let from = &accounts[(teller + round) % 5];
                let to = &accounts[(teller + 2 * round + 1) % 5];
                if from == to {
                    continue;
                }
                let amount = 10 + ((teller * 7 + round * 13) % 50) as i64;
                match transfer(&client, from, to, amount).await {
                    Ok(committed) => {
                        done += 1;
                        if committed.attempts > 1 {
                            retried += 1;
                        }
                    }
                    Err(TransferError::InsufficientFunds { .. }) => refused += 1,
                    Err(e) => return Err(anyhow::anyhow!("teller {teller}: {e}")),
                }
            }
            println!(
                "teller {teller}: {done} transfers ({retried} needed a retry), {refused} refused for lack of funds"
            );
            anyhow::Ok(())
        }));
    }
    for teller in tellers {
        teller.await??;
    }

    // An overdraft is reported as such; nothing is written.
    let big = transfer(&client, &accounts[0], &accounts[1], 10_000).await;
    if let Err(e @ TransferError::InsufficientFunds { .. }) = &big {
        println!("a transfer of 10000 was refused: {e}");
    }

    let mut total = 0;
    for account in &accounts {
        let resp = client.clone().get(account.as_str(), None).await?;
        let balance: i64 = resp.kvs()[0].value_str()?.parse()?;
        println!("{account}: {balance}");
        total += balance;
    }
    println!("total: {total}");
    anyhow::ensure!(total == 500, "money was created or destroyed");
    client
        .clone()
        .delete(
            format!("{bank}/"),
            Some(coord::etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    Ok(())
}
