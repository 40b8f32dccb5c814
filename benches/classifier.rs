//! Cost of the SQL classifier per statement: a few representative statements and the whole corpus
//! (tests/data/classifier_corpus.sql). The baseline is lexing alone, measured in the same run; the closing table prints
//! classify / lex ratios. Run: `cargo bench --bench classifier -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pgsplit::router::{FunctionSet, Lexer, classify};

const CORPUS: &str = include_str!("../tests/data/classifier_corpus.sql");

const STATEMENTS: &[(&str, &str)] = &[
    ("point_select", "SELECT id, name, email FROM users WHERE id = $1"),
    (
        "insert_returning",
        "INSERT INTO orders (user_id, total, status) VALUES ($1, $2, 'new') RETURNING id, placed_at",
    ),
    (
        "update",
        "UPDATE users SET name = $1, email = $2, data = data || $3 WHERE id = $4",
    ),
    (
        "join_order_limit",
        "SELECT u.id, u.name, o.id AS order_id, o.total, o.placed_at FROM users u JOIN orders o ON o.user_id = u.id \
         WHERE o.status = 'paid' AND u.email IS NOT NULL ORDER BY o.placed_at DESC LIMIT 20",
    ),
    (
        "cte_window",
        "WITH recent AS (SELECT o.user_id, o.total, o.placed_at, row_number() OVER (PARTITION BY o.user_id \
         ORDER BY o.placed_at DESC) AS rn FROM orders o WHERE o.placed_at > now() - interval '30 days'), \
         totals AS (SELECT user_id, sum(total) AS total, count(*) AS n, max(placed_at) AS last_order FROM recent \
         GROUP BY user_id), ranked AS (SELECT t.*, rank() OVER (ORDER BY t.total DESC) AS rank, \
         percent_rank() OVER (ORDER BY t.n) AS pr FROM totals t) SELECT u.id, u.name, u.email, r.total, r.n, \
         r.last_order, r.rank, r.pr, coalesce(u.data ->> 'plan', 'free') AS plan, array_length(u.tags, 1) AS tags \
         FROM ranked r JOIN users u ON u.id = r.user_id WHERE r.rank <= 100 AND u.mood <> 'sad' \
         ORDER BY r.rank, u.name /* top customers */",
    ),
    (
        "read_only_transaction",
        "BEGIN READ ONLY; SELECT * FROM users WHERE id = 1; COMMIT",
    ),
    ("write_function", "SELECT nextval('order_seq'), add_order()"),
];

include!("../tests/data/corpus_functions.rs");

/// The SQL of every corpus record (the header, which has no expectation line, is skipped).
fn corpus() -> Vec<&'static str> {
    CORPUS
        .split("\n-- ---\n")
        .skip(1)
        .map(|r| r.split_once('\n').map_or("", |(_, sql)| sql))
        .collect()
}

fn lex(sql: &str) -> usize {
    Lexer::new(sql).count()
}

fn benches(c: &mut Criterion) {
    let functions = corpus_functions();
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(1));
    for (name, sql) in STATEMENTS {
        group.bench_function(format!("lex_only/{name}"), |b| b.iter(|| lex(black_box(sql))));
        group.bench_function(*name, |b| b.iter(|| classify(black_box(sql), &functions)));
    }
    group.finish();

    let corpus = corpus();
    let mut group = c.benchmark_group("corpus");
    group.throughput(Throughput::Elements(corpus.len() as u64));
    group.bench_function("lex_only", |b| {
        b.iter(|| corpus.iter().map(|sql| lex(black_box(sql))).sum::<usize>())
    });
    group.bench_function("classify", |b| {
        b.iter(|| {
            corpus
                .iter()
                .map(|sql| classify(black_box(sql), &functions).statements)
                .sum::<u32>()
        })
    });
    group.finish();
}

/// ns per call of `f`, timed for about `budget`.
fn ns_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    let (start, mut calls) = (Instant::now(), 0u64);
    while start.elapsed() < budget {
        for _ in 0..64 {
            f();
        }
        calls += 64;
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// The closing table: each statement's classify cost against lexing it alone, measured now.
fn ratios() {
    let functions = corpus_functions();
    let budget = Duration::from_millis(200);
    println!(
        "\n{:<24} {:>6} {:>10} {:>12} {:>7}",
        "statement", "bytes", "lex ns", "classify ns", "ratio"
    );
    let corpus = corpus();
    let corpus_bytes: usize = corpus.iter().map(|s| s.len()).sum();
    let rows = STATEMENTS.iter().map(|(name, sql)| (*name, vec![*sql]));
    for (name, sqls) in rows.chain([("corpus (per record)", corpus.clone())]) {
        let per = sqls.len() as f64;
        let lexed = ns_per_call(budget, || {
            black_box(sqls.iter().map(|s| lex(black_box(s))).sum::<usize>());
        }) / per;
        let classified = ns_per_call(budget, || {
            black_box(
                sqls.iter()
                    .map(|s| classify(black_box(s), &functions).statements)
                    .sum::<u32>(),
            );
        }) / per;
        let bytes = if sqls.len() == 1 {
            sqls[0].len()
        } else {
            corpus_bytes / sqls.len()
        };
        println!(
            "{name:<24} {bytes:>6} {lexed:>10.0} {classified:>12.0} {:>6.2}x",
            classified / lexed
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
    ratios();
}
