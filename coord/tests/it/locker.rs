//! Locker: blocking lock/unlock from plain threads; refused inside a runtime.

use std::sync::Arc;

use coord::{Error, Locker, Session};

use crate::common::{client, read_counter, unique};

/// Two lockers (two sessions) on one name, two threads each, serialise unprotected
/// read-modify-writes; unlock of an unlocked Locker is an error.
#[test]
fn blocking_lockers_exclude_each_other_from_plain_threads() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let name = unique("locker");
    let counter = format!("{name}-counter");
    let mut threads = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let session = runtime.block_on(async {
            Session::builder(client().await)
                .ttl(10)
                .build()
                .await
                .unwrap()
        });
        let locker = Arc::new(Locker::new(&session, &name, runtime.handle().clone()).unwrap());
        assert!(matches!(locker.unlock(), Err(Error::InvalidArgument(_))));
        for _ in 0..2 {
            let (locker, counter, handle) =
                (locker.clone(), counter.clone(), runtime.handle().clone());
            threads.push(std::thread::spawn(move || {
                let c = handle.block_on(client());
                for _ in 0..10 {
                    locker.lock().unwrap();
                    assert!(locker.fencing_token().is_some());
                    let v = handle.block_on(read_counter(&c, &counter));
                    handle
                        .block_on(c.clone().put(counter.as_str(), (v + 1).to_string(), None))
                        .unwrap();
                    locker.unlock().unwrap();
                }
            }));
        }
        sessions.push(session);
    }
    for t in threads {
        t.join().unwrap();
    }
    let total = runtime.block_on(async { read_counter(&client().await, &counter).await });
    assert_eq!(total, 40);
}

/// Inside a runtime (an async task) lock() refuses with a typed error, at once.
#[test]
fn locker_refuses_to_block_inside_a_runtime() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let name = unique("locker-async");
    let session = runtime.block_on(async {
        Session::builder(client().await)
            .ttl(10)
            .build()
            .await
            .unwrap()
    });
    let locker = Locker::new(&session, &name, runtime.handle().clone()).unwrap();
    let (locked, unlocked) = runtime.block_on(async { (locker.lock(), locker.unlock()) });
    assert!(
        matches!(locked, Err(Error::BlockingInAsync(_))),
        "{locked:?}"
    );
    assert!(
        matches!(unlocked, Err(Error::BlockingInAsync(_))),
        "{unlocked:?}"
    );
    // The same call on a plain thread works.
    locker.lock().unwrap();
    locker.unlock().unwrap();
}
