// The FunctionSet the classifier corpus's header describes; `include!`d by every user of the corpus (the unit test,
// the follower oracle test, the classifier bench) so that they classify with one and the same set.
fn corpus_functions() -> FunctionSet {
    let volatile = [
        ("public", "add_order"),
        ("public", "AddOrder"),
        ("public", "random_pick"),
        ("app", "bump"),
        ("public", "audit_log"),
        ("app", "touch"),
    ];
    FunctionSet::new(&["audit_log".into(), "app.touch".into()], &["random_pick".into()], volatile)
}
