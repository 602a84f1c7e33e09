//! The passphrase variables, read the way the binaries read them: once, into the
//! process, and gone from the environment before anything could be spawned. Its own
//! test binary, so its process starts with the variables set and no other test reads
//! or changes the environment beside it.

use makproxy_core::secret::{
    new_passphrase, passphrase, take_from_environment, NEW_PASSPHRASE_ENV, PASSPHRASE_ENV,
    SECRET_ENV,
};

#[test]
fn passphrases_are_taken_out_of_the_environment_and_each_is_read_by_its_own_name() {
    // Edition 2021: set_var is safe; this is the binary's only test, so no other
    // thread reads the environment yet.
    std::env::set_var(PASSPHRASE_ENV, "the current passphrase");
    std::env::set_var(NEW_PASSPHRASE_ENV, "the next passphrase");
    take_from_environment();
    for name in SECRET_ENV {
        assert_eq!(
            std::env::var_os(name),
            None,
            "{name} is still in the environment a child would inherit"
        );
    }
    let current = passphrase(PASSPHRASE_ENV, "not asked: no prompt is installed");
    assert_eq!(
        current.as_deref().map(String::as_str),
        Some("the current passphrase")
    );
    let next = new_passphrase(NEW_PASSPHRASE_ENV).unwrap();
    assert_eq!(next.as_str(), "the next passphrase");
    // Read again later (key passwd reads both): the same values, from the process.
    take_from_environment();
    assert_eq!(
        passphrase(NEW_PASSPHRASE_ENV, "not asked")
            .as_deref()
            .map(String::as_str),
        Some("the next passphrase")
    );
    // A variable that was never set is not answered by another one's value.
    assert!(passphrase("MAKPROXY_TEST_NEVER_SET", "not asked").is_none());
}
