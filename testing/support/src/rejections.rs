//! Bad-input tables: calls of different RPCs, each with the code and text it must fail with.

/// One row of a bad-input table: the case's name, the call's result (see
/// [`only_status`]), the code it must fail with, and text its message must contain.
pub type Rejection = (
    &'static str,
    Result<(), tonic::Status>,
    tonic::Code,
    &'static str,
);

/// Keeps only whether a call failed, so calls of different RPCs fit in one table.
pub fn only_status<T>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<(), tonic::Status> {
    result.map(|_| ())
}

/// Asserts that every call of the table failed with its code and message.
#[track_caller]
pub fn assert_rejections(cases: Vec<Rejection>) {
    for (case, result, code, text) in cases {
        let err = match result {
            Ok(()) => panic!("{case}: succeeded, expected {code:?}"),
            Err(err) => err,
        };
        assert_eq!(err.code(), code, "{case}: {err:?}");
        assert!(
            err.message().contains(text),
            "{case}: {:?} should mention {text:?}",
            err.message()
        );
    }
}
