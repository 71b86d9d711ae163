//! The fault catalogue: what the suite can do to the stack, one fault per run.

/// The faults, one per run, in the order of issue 7's list, then issues 14 and 15's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// `docker pause` an inventory replica (lock holder) past its lease TTL.
    PauseLockHolder,
    /// `docker kill` an inventory replica (lock holder).
    KillLockHolder,
    /// `docker kill` the order replica leading `expire-reservations`.
    KillJobLeader,
    /// `docker stop` (SIGTERM) the order replica leading `expire-reservations`.
    StopJobLeader,
    /// `docker stop` one etcd member (a follower).
    StopEtcdMember,
    /// `docker kill` the etcd leader.
    KillEtcdLeader,
    /// `docker restart` the inventory's Postgres.
    RestartPostgres,
    /// `docker kill` a payment replica while its workers hold items.
    KillPaymentWorker,
    /// `docker network disconnect` an inventory replica: cut off from etcd (and all).
    CutOffFromEtcd,
    /// Replay saga messages: duplicate CreateOrder/Reserve/Commit/Release, and a
    /// Release before its Reserve.
    DuplicateMessages,
    /// Compact etcd's history repeatedly while waiters watch.
    CompactEtcd,
    /// Hold an inventory replica's Reserve inside its critical section (after its read,
    /// before its write; the hooked image announces it), `docker pause` it until its
    /// lease is gone and the other replica sold, resume it: `mutex-unfenced` must
    /// oversell, `mutex` must refuse the stale write (issue 14).
    PauseInSection,
    /// `docker kill` an inventory replica (lock holder), then move the etcd leader
    /// while its lease runs out (issue 15).
    KillLockHolderMoveLeader,
    /// `docker kill` the order replica leading `expire-reservations`, then move the
    /// etcd leader while its lease runs out (issue 15).
    KillJobLeaderMoveLeader,
}

impl Fault {
    pub const ALL: [Fault; 14] = [
        Fault::PauseLockHolder,
        Fault::KillLockHolder,
        Fault::KillJobLeader,
        Fault::StopJobLeader,
        Fault::StopEtcdMember,
        Fault::KillEtcdLeader,
        Fault::RestartPostgres,
        Fault::KillPaymentWorker,
        Fault::CutOffFromEtcd,
        Fault::DuplicateMessages,
        Fault::CompactEtcd,
        Fault::PauseInSection,
        Fault::KillLockHolderMoveLeader,
        Fault::KillJobLeaderMoveLeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::PauseLockHolder => "pause-lock-holder",
            Fault::KillLockHolder => "kill-lock-holder",
            Fault::KillJobLeader => "kill-job-leader",
            Fault::StopJobLeader => "sigterm-job-leader",
            Fault::StopEtcdMember => "stop-etcd-member",
            Fault::KillEtcdLeader => "kill-etcd-leader",
            Fault::RestartPostgres => "restart-postgres",
            Fault::KillPaymentWorker => "kill-payment-worker",
            Fault::CutOffFromEtcd => "cut-off-from-etcd",
            Fault::DuplicateMessages => "duplicate-messages",
            Fault::CompactEtcd => "compact-etcd",
            Fault::PauseInSection => "pause-in-section",
            Fault::KillLockHolderMoveLeader => "kill-lock-holder-move-leader",
            Fault::KillJobLeaderMoveLeader => "kill-job-leader-move-leader",
        }
    }
}
