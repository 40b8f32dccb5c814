-- Classifier corpus: what pgsplit's SQL classifier (src/router) must say about each query string.
--
-- Format: records separated by a line holding only `-- ---`. A record's first line is `-- read` or `-- write`
-- (the expected Access of the whole string), optionally followed by the expected Reason (Reason::as_str()); the
-- rest is the query string, sent as one simple Query (it may span lines and hold several statements).
-- This header is the one record without an expectation line.
--
-- Every `-- read` record must succeed on a PostgreSQL 15 hot standby whose leader ran classifier_schema.sql. Some
-- change session settings (SET ...): run each on a fresh connection, or RESET ALL between them. `-- write` records
-- need not be valid SQL, and must never be run on a server you care about: they include pg_promote(),
-- pg_terminate_backend(), COPY ... TO PROGRAM and DDL.
--
-- The test (src/router/classify.rs) classifies with this FunctionSet:
--   write_functions         = ["audit_log", "app.touch"]
--   read_only_functions     = ["random_pick"]
--   volatile user functions = public.add_order, public."AddOrder", public.random_pick, app.bump, public.audit_log,
--                             app.touch  (what pg_proc reports as VOLATILE for classifier_schema.sql)
-- plus the built-in writers.
-- ---
-- read read
SELECT 1
-- ---
-- read read
select * from users where id = 1
-- ---
-- read read
SELECT u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id ORDER BY o.placed_at DESC LIMIT 10
-- ---
-- read read
TABLE users
-- ---
-- read read
VALUES (1, 'a'), (2, 'b')
-- ---
-- read read
(SELECT 1) UNION ALL (SELECT 2)
-- ---
-- read read
((SELECT id FROM users)) ORDER BY 1
-- ---
-- read read
SELECT DISTINCT ON (user_id) user_id, total FROM orders ORDER BY user_id, placed_at DESC
-- ---
-- read read
SELECT count(*) FILTER (WHERE status = 'paid') FROM orders
-- ---
-- read read
SELECT id, sum(total) OVER (PARTITION BY user_id ORDER BY id) FROM orders
-- ---
-- read read
SELECT * FROM users TABLESAMPLE SYSTEM (50)
-- ---
-- read read
SELECT now() AT TIME ZONE 'UTC'
-- ---
-- read read
SELECT json_build_object('a', 1), jsonb_agg(name) FROM users
-- ---
-- read read
SELECT x FROM generate_series(1, 3) AS g(x)
-- ---
-- read read
SELECT * FROM user_totals
-- ---
-- read read
SELECT 1 WHERE EXISTS (SELECT 1 FROM orders WHERE orders.user_id = 1)
-- ---
-- read read
SELECT id FROM users WHERE id IN (1, 2, 3) AND id NOT IN (SELECT user_id FROM orders WHERE total > 100)
-- ---
-- read read
SELECT * FROM users u LEFT JOIN LATERAL (SELECT * FROM orders o WHERE o.user_id = u.id LIMIT 1) o ON true
-- ---
-- read read
-- FOR inside substring() is not a locking clause
SELECT substring('hello' FROM 2 FOR 3)
-- ---
-- read read
SELECT overlay('hello' PLACING 'XX' FROM 2 FOR 2)
-- ---
-- read read
-- FOR READ ONLY is the one FOR clause that locks nothing
SELECT * FROM users FOR READ ONLY
-- ---
-- read read
SELECT CASE WHEN id > 1 THEN 'big' ELSE 'small' END FROM users
-- ---
-- read read
SELECT ARRAY[1, 2, 3] @> ARRAY[2], '{"a": 1}'::jsonb -> 'a', data ->> 'plan', data #>> '{plan}' FROM users
-- ---
-- read read
SELECT tags || ARRAY['x'], 'a' || 'b', 2 ^ 3, 7 % 3, -1, @ -5, |/ 16.0 FROM users
-- ---
-- read read
SELECT 1::int4, '1'::numeric(10, 2), CAST('2024-01-01' AS date), 'ab'::varchar(1)
-- ---
-- read read
SELECT id FROM users ORDER BY id NULLS LAST OFFSET 1 ROWS FETCH FIRST 1 ROW ONLY
-- ---
-- read read
SELECT mood, count(*) FROM users GROUP BY ROLLUP (mood)
-- ---
-- read read
SELECT 1 OPERATOR(pg_catalog.+) 2
-- ---
-- read read
select/*no space*/1
-- ---
-- read read
SELECT u.* FROM users AS u WHERE u.email IS NOT NULL AND u.name <> 'x' AND u.id >= 1 AND u.id != 99
-- ---
-- read read
SELECT '{"a": "b"}'::jsonb ? 'a', '{"a": 1}'::jsonb ?| ARRAY['a'], 'abc' ~ '^a', 'abc' !~* 'z'
-- ---
-- read read
SELECT to_tsvector('a b') @@ to_tsquery('a'), point(1, 2) <-> point(3, 4), int4range(1, 5) && int4range(3, 7)
-- ---
-- read read
SELECT (ARRAY[1, 2, 3])[1:2], (ARRAY[1, 2, 3])[2]
-- ---
-- read read
SELECT * FROM users WHERE name = 'O''Brien'
-- ---
-- read read
SELECT 1e3, 1.5e-3, .5, 0.5, 42
-- ---
-- read read
SELECT now(), lower('X'), coalesce(NULL, 1), greatest(1, 2), abs(-1), random(), gen_random_uuid() IS NOT NULL
-- ---
-- write leader_only
-- a standby answers pg_is_in_recovery() otherwise than the leader a client of pgsplit expects
SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() IS NOT NULL, txid_current_snapshot() IS NOT NULL
-- ---
-- read read
SELECT last_value FROM order_seq
-- ---
-- read read
SELECT pg_sequence_last_value('order_seq')
-- ---
-- read read
SELECT count(*) FROM pg_stat_activity
-- ---
-- read read
SELECT pg_sleep(0)
-- ---
-- read read
SELECT pg_get_serial_sequence('orders', 'id'), current_setting('search_path'), version() IS NOT NULL
-- ---
-- read read
-- quoted identifiers
SELECT "name" FROM "users"
-- ---
-- read read
SELECT "delete" FROM items WHERE "delete"
-- ---
-- read read
-- an unquoted keyword after a dot is a column name
SELECT items."delete", items.delete FROM items
-- ---
-- read read
SELECT "Weird ""Name""" FROM items
-- ---
-- read read
SELECT 'x' AS "select", 1 AS "update", 2 AS "insert", 3 AS "into"
-- ---
-- read read
WITH "delete" AS (SELECT 1 AS x) SELECT * FROM "delete"
-- ---
-- read read
SELECT "for", "update" FROM (SELECT 1 AS "for", 2 AS "update") s
-- ---
-- read read
SELECT share FROM (SELECT 1 AS share) s
-- ---
-- read read
SELECT key, value FROM jsonb_each('{"a": 1}')
-- ---
-- read read
SELECT insert_count, update_at, deleted FROM (SELECT 1 AS insert_count, 2 AS update_at, 3 AS deleted) s
-- ---
-- read read
SELECT a$b FROM (SELECT 1 AS a$b) s
-- ---
-- read read
-- strings hide what looks like code
SELECT 'it''s -- not a comment' AS s
-- ---
-- read read
SELECT '/* not a comment' AS s
-- ---
-- read read
SELECT 'DELETE FROM users; --' AS s
-- ---
-- read read
SELECT * FROM orders WHERE status = 'update' OR status = 'FOR UPDATE'
-- ---
-- read read
SELECT 'INTO' AS s, 'nextval(''order_seq'')' AS not_a_call
-- ---
-- read read
SELECT E'it\'s; DELETE FROM users' AS s
-- ---
-- read read
SELECT E'\\' AS backslash, 'x' AS y
-- ---
-- read read
-- standard_conforming_strings = on: a backslash in a plain literal is just a character
SELECT '\' AS backslash, 'C:\temp\' AS path
-- ---
-- read read
SELECT name FROM users WHERE name LIKE 'a\_%' ESCAPE '\'
-- ---
-- read read
SELECT E'\x41\101\u0041' AS a
-- ---
-- read read
SELECT U&'d\0061t\+000061' AS u
-- ---
-- read read
SELECT U&'!0041' UESCAPE '!' AS u
-- ---
-- read read
SELECT U&"name" FROM users
-- ---
-- read read
SELECT B'1010' AS bits, X'1F' AS hex, b'1' | b'0' AS ored
-- ---
-- read read
SELECT N'national' AS n
-- ---
-- read read
SELECT $$ DELETE FROM users; $$ AS body
-- ---
-- read read
SELECT $fn$ contains $$ and ; and 'quotes $fn$ AS body
-- ---
-- read read
SELECT $a$ $b$ nested-looking $b$ $a$ AS body
-- ---
-- read read
SELECT $$nextval('order_seq')$$ AS not_a_call, $_$ FOR UPDATE $_$ AS not_locking
-- ---
-- read read
-- string continuation: adjacent literals separated by a newline are one literal
SELECT 'a'
'b' AS continued
-- ---
-- read read
-- the continuation of a plain literal is plain: the backslash does not escape, '' is a quote
SELECT 'x'
'\'' ; DELETE FROM items; --' AS still_a_string
-- ---
-- read read
SELECT 'a' -- a comment between the parts
  'b' AS continued
-- ---
-- read read
-- the continuation of an E'' literal keeps backslash escapes
SELECT E'x'
'\'' AS x_quote
-- ---
-- read read
-- comments
SELECT 1 /* outer /* nested DELETE FROM users; */ still comment UPDATE users */ AS one
-- ---
-- read read
SELECT 1 -- trailing comment with DELETE FROM users;
-- ---
-- read read
/* leading */ -- and a line comment
SELECT 1
-- ---
-- read read
SELECT /* nextval('order_seq') */ 1
-- ---
-- read read
SELECT id FROM users ORDER BY id -- FOR UPDATE
-- ---
-- read read
SELECT id /* FOR UPDATE */ FROM users
-- ---
-- read read
SELECT 1 +-- a comment right after an operator
2
-- ---
-- read read
SELECT 2 */* a comment right after an operator */ 3
-- ---
-- read read
SELECT 1 /*/ still a comment */
-- ---
-- read read
-- a column that happens to be called like a writing function is not a call
SELECT nextval FROM (SELECT 1 AS nextval) t
-- ---
-- read read
SELECT x.nextval, x.setval FROM (SELECT 1 AS nextval, 2 AS setval) x
-- ---
-- read read
-- parameters
PREPARE p1(int) AS SELECT * FROM users WHERE id = $1; DEALLOCATE p1
-- ---
-- read read
PREPARE p2(int, text) AS SELECT * FROM users WHERE id = $1 AND name <> $2::text; DEALLOCATE PREPARE p2
-- ---
-- read read
PREPARE "Mixed"(jsonb) AS SELECT data @> $1 FROM users; DEALLOCATE "Mixed"
-- ---
-- read read
-- CTEs
WITH t AS (SELECT * FROM users) SELECT * FROM t
-- ---
-- read read
WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r
-- ---
-- read read
WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) SELECT * FROM b
-- ---
-- read read
WITH a AS MATERIALIZED (SELECT 1), b AS NOT MATERIALIZED (SELECT 2) SELECT * FROM a, b
-- ---
-- read read
WITH outer_cte AS (WITH inner_cte AS (SELECT 1 AS v) SELECT v FROM inner_cte) SELECT * FROM outer_cte
-- ---
-- read read
SELECT * FROM (WITH x AS (SELECT 2 AS v) SELECT v FROM x) s
-- ---
-- read read
WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM t WHERE n < 3) SEARCH DEPTH FIRST BY n SET ord
SELECT * FROM t
-- ---
-- read read
WITH totals AS (SELECT user_id, sum(total) AS s FROM orders GROUP BY user_id)
SELECT u.name, t.s, rank() OVER (ORDER BY t.s DESC)
FROM users u JOIN totals t ON t.user_id = u.id
WHERE u.id IN (SELECT user_id FROM orders WHERE status = 'paid')
-- ---
-- read read
-- functions that do not write
SELECT double_it(21)
-- ---
-- read read
SELECT public.double_it(id), "double_it"(id) FROM users
-- ---
-- read read
SELECT * FROM users WHERE id IN (SELECT double_it(1))
-- ---
-- read read
-- addorder() is not "AddOrder"(): unquoted names fold to lower case
SELECT addorder(), ADDORDER()
-- ---
-- read read
-- volatile, but listed in read_only_functions
SELECT random_pick() IS NOT NULL
-- ---
-- read read
SELECT public.random_pick() IS NOT NULL
-- ---
-- read read
-- EXPLAIN without ANALYZE only plans, whatever the statement
EXPLAIN SELECT * FROM users
-- ---
-- read read
EXPLAIN ANALYZE SELECT * FROM users
-- ---
-- read read
EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM users WHERE id = 1
-- ---
-- read read
EXPLAIN (ANALYZE true, COSTS off, FORMAT json) SELECT 1
-- ---
-- read read
EXPLAIN VERBOSE SELECT 1
-- ---
-- read read
EXPLAIN ANALYZE VERBOSE SELECT 1
-- ---
-- read read
explain analyse select 1
-- ---
-- read read
EXPLAIN DELETE FROM items
-- ---
-- read read
EXPLAIN INSERT INTO users (id, name) VALUES (99, 'x')
-- ---
-- read read
EXPLAIN (ANALYZE false) DELETE FROM items
-- ---
-- read read
EXPLAIN (ANALYZE off, VERBOSE) UPDATE users SET name = 'x'
-- ---
-- read read
EXPLAIN (ANALYZE 0) DELETE FROM items
-- ---
-- read read
EXPLAIN (FORMAT yaml) SELECT * FROM users FOR UPDATE
-- ---
-- read read
EXPLAIN SELECT nextval('order_seq')
-- ---
-- read read
EXPLAIN (SELECT 1)
-- ---
-- read read
EXPLAIN (COSTS false) WITH d AS (DELETE FROM items RETURNING 1) SELECT * FROM d
-- ---
-- read read
EXPLAIN ANALYZE WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r
-- ---
-- read read
-- SHOW
SHOW search_path
-- ---
-- write leader_only
-- SHOW ALL shows transaction_read_only, which a standby forces on
SHOW ALL
-- ---
-- read read
SHOW TIME ZONE
-- ---
-- read read
SHOW TRANSACTION ISOLATION LEVEL
-- ---
-- read read
SHOW SESSION AUTHORIZATION
-- ---
-- read read
show "search_path"
-- ---
-- read read
SHOW search_path; SELECT current_setting('search_path')
-- ---
-- read session
-- SET / RESET / DISCARD / DEALLOCATE / UNLISTEN: a standby accepts them and no data changes
SET search_path TO public
-- ---
-- read session
SET search_path = app, public
-- ---
-- read session
SET SESSION statement_timeout = '5s'
-- ---
-- read session
SET LOCAL work_mem = '8MB'
-- ---
-- read session
SET TIME ZONE 'UTC'
-- ---
-- read session
SET TIME ZONE LOCAL
-- ---
-- read session
SET TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE
-- ---
-- read session
SET SCHEMA 'public'
-- ---
-- read session
SET NAMES 'UTF8'
-- ---
-- read session
SET XML OPTION CONTENT
-- ---
-- read session
SET application_name TO DEFAULT
-- ---
-- read session
SET application_name = 'pgsplit corpus'
-- ---
-- read session
set Application_Name to "corpus"
-- ---
-- read session
SET pgsplit.min_lsn = '0/16B3748'
-- ---
-- read session
SET myapp.user_id = 42
-- ---
-- read session
SET ROLE NONE
-- ---
-- read session
SET SESSION AUTHORIZATION DEFAULT
-- ---
-- read session
SET default_transaction_read_only = on
-- ---
-- read session
SET default_transaction_isolation = 'repeatable read'
-- ---
-- read session
SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY
-- ---
-- read session
SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ
-- ---
-- read session
-- the session default may say READ WRITE on a standby; a transaction may not
SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE
-- ---
-- read session
SET transaction_read_only = on
-- ---
-- read session
SET CONSTRAINTS ALL DEFERRED
-- ---
-- read session
RESET search_path
-- ---
-- read session
RESET ALL
-- ---
-- read session
RESET TIME ZONE
-- ---
-- read session
RESET SESSION AUTHORIZATION
-- ---
-- read session
RESET ROLE
-- ---
-- read session
RESET TRANSACTION ISOLATION LEVEL
-- ---
-- read session
DISCARD ALL
-- ---
-- read session
DISCARD PLANS
-- ---
-- read session
DISCARD SEQUENCES
-- ---
-- read session
DISCARD TEMP
-- ---
-- read session
UNLISTEN *
-- ---
-- read session
UNLISTEN chan
-- ---
-- read session
DEALLOCATE ALL
-- ---
-- read session
SET statement_timeout = '1s'; SELECT * FROM users; RESET statement_timeout
-- ---
-- read transaction
-- transaction control
COMMIT
-- ---
-- read transaction
ROLLBACK
-- ---
-- read transaction
END
-- ---
-- read transaction
ABORT WORK
-- ---
-- read transaction
SET TRANSACTION READ ONLY
-- ---
-- read read_only_transaction
BEGIN READ ONLY; SELECT * FROM users; COMMIT
-- ---
-- read read_only_transaction
START TRANSACTION READ ONLY; SELECT 1; COMMIT
-- ---
-- read read_only_transaction
BEGIN TRANSACTION READ ONLY ISOLATION LEVEL REPEATABLE READ; SELECT 1; COMMIT
-- ---
-- read read_only_transaction
BEGIN READ ONLY, ISOLATION LEVEL READ COMMITTED; SELECT 1; END
-- ---
-- read read_only_transaction
BEGIN WORK READ ONLY; SELECT 1; ROLLBACK
-- ---
-- read read_only_transaction
BEGIN READ ONLY NOT DEFERRABLE; SELECT 1; ABORT
-- ---
-- read read_only_transaction
begin read only; savepoint s1; select 1; rollback to savepoint s1; release s1; commit
-- ---
-- read read_only_transaction
BEGIN READ ONLY; SAVEPOINT a; ROLLBACK TO a; RELEASE SAVEPOINT a; COMMIT AND NO CHAIN
-- ---
-- read read_only_transaction
BEGIN READ ONLY; SELECT 1; COMMIT AND CHAIN; SELECT 2; COMMIT
-- ---
-- read read_only_transaction
BEGIN READ ONLY; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT 1; COMMIT
-- ---
-- read read_only_transaction
BEGIN READ ONLY; SET LOCAL search_path = app, public; SELECT count(*) FROM events; COMMIT
-- ---
-- read read_only_transaction
BEGIN READ ONLY; DECLARE c1 CURSOR FOR SELECT * FROM users; FETCH 2 FROM c1; MOVE NEXT IN c1; CLOSE c1; COMMIT
-- ---
-- read read_only_transaction
BEGIN READ ONLY; DECLARE c2 NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1; FETCH c2; COMMIT
-- ---
-- write execute
-- EXECUTE is a write to the classifier even inside a read-only transaction: the session layer, which knows both the
-- transaction and the prepared statement, decides where it runs
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; PREPARE p3 AS SELECT 1; EXECUTE p3; COMMIT
-- ---
-- read read_only_transaction
BEGIN READ ONLY; SELECT 1; COMMIT; SELECT 2
-- ---
-- read read
-- multi-statement strings
SELECT 1; SELECT 2;
-- ---
-- read read
SELECT 1;;; SELECT 2
-- ---
-- read read
SELECT ';' AS semi; SELECT 2
-- ---
-- read read
SELECT 1 /* ; */ ; SELECT $$;$$
-- ---
-- read read
-- COPY TO STDOUT of a table or a read-only query
COPY users TO STDOUT
-- ---
-- read read
COPY users (id, name) TO STDOUT WITH (FORMAT csv, HEADER)
-- ---
-- read read
COPY (SELECT * FROM orders WHERE total > 5) TO STDOUT
-- ---
-- read read
COPY (WITH x AS (SELECT 1 AS a) SELECT a FROM x) TO STDOUT (FORMAT text)
-- ---
-- read read
COPY public.users TO STDOUT CSV HEADER
-- ---
-- read read
copy (values (1), (2)) to stdout
-- ---
-- read empty
;
-- ---
-- read empty
/* only a comment */ ; -- and another
-- ---
-- write write
-- DML
INSERT INTO users (id, name) VALUES (10, 'x')
-- ---
-- write write
insert into orders (user_id, total) values (1, 1) returning id
-- ---
-- write write
UPDATE users SET name = 'y' WHERE id = 1
-- ---
-- write write
DELETE FROM items WHERE qty = 0
-- ---
-- write write
MERGE INTO items i USING (SELECT 1 AS id) s ON i.id = s.id WHEN MATCHED THEN UPDATE SET qty = qty + 1
-- ---
-- write write
INSERT INTO users VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET name = excluded.name
-- ---
-- write write
INSERT INTO users SELECT * FROM users WHERE false
-- ---
-- write write
TRUNCATE items
-- ---
-- write write
INSERT INTO "Users" ("Name") VALUES ('x')
-- ---
-- write write
DELETE FROM "delete" WHERE sku = $$x$$
-- ---
-- write write
UPDATE users SET data = data || '{"x": 1}' WHERE id = $1
-- ---
-- write write
-- DDL and utility commands
CREATE TABLE t (a int)
-- ---
-- write write
CREATE INDEX CONCURRENTLY ON users (email)
-- ---
-- write write
ALTER TABLE users ADD COLUMN x int
-- ---
-- write write
DROP TABLE IF EXISTS t
-- ---
-- write write
GRANT SELECT ON users TO PUBLIC
-- ---
-- write write
COMMENT ON TABLE users IS 'people'
-- ---
-- write write
VACUUM users
-- ---
-- write write
VACUUM (VERBOSE, ANALYZE) users
-- ---
-- write write
ANALYZE users
-- ---
-- write write
CLUSTER users USING users_pkey
-- ---
-- write write
REINDEX TABLE users
-- ---
-- write write
LOCK TABLE users IN ACCESS SHARE MODE
-- ---
-- write write
NOTIFY chan, 'payload'
-- ---
-- write write
CHECKPOINT
-- ---
-- write write
CALL do_something(1)
-- ---
-- write write
DO $$ BEGIN PERFORM 1; END $$
-- ---
-- write write
LOAD 'auto_explain'
-- ---
-- write write
REFRESH MATERIALIZED VIEW mv
-- ---
-- write write
ALTER SYSTEM SET work_mem = '8MB'
-- ---
-- write write
CREATE EXTENSION IF NOT EXISTS pgcrypto
-- ---
-- write write
CREATE RULE r AS ON INSERT TO users DO INSTEAD NOTHING
-- ---
-- write write
CREATE TABLE temp_data (a int)
-- ---
-- write write
CREATE UNLOGGED TABLE u1 (a int)
-- ---
-- write write
CREATE VIEW v2 AS SELECT * FROM users
-- ---
-- write write
CREATE FUNCTION f1() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3
-- ---
-- write write
CREATE OR REPLACE PROCEDURE p1() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (CASE WHEN true THEN 1 END); END
-- ---
-- write write
IMPORT FOREIGN SCHEMA remote FROM SERVER s INTO public
-- ---
-- write write
SECURITY LABEL FOR selinux ON TABLE users IS 'system_u:object_r:sepgsql_table_t:s0'
-- ---
-- write write
-- a statement the classifier does not know goes to the leader
FOOBAR 1
-- ---
-- write write
START
-- ---
-- write write
(VACUUM)
-- ---
-- write unparsable
42
-- ---
-- write unparsable
'just a string'
-- ---
-- write unparsable
BEGIN ISOLATION LEVEL BOGUS
-- ---
-- write unparsable
COMMIT NOW
-- ---
-- write unparsable
DISCARD EVERYTHING
-- ---
-- write unparsable
SET search_path
-- ---
-- write unparsable
EXPLAIN VACUUM
-- ---
-- write unparsable
-- text that does not lex
SELECT 'unterminated
-- ---
-- write unparsable
SELECT 1 /* unterminated /* nested */
-- ---
-- write unparsable
SELECT $$ unterminated
-- ---
-- write unparsable
SELECT $a$ body $b$
-- ---
-- write unparsable
SELECT "unterminated
-- ---
-- write unparsable
SELECT E'ends with an escaped quote\'
-- ---
-- write unparsable
SELECT 1; SELECT 'the error is in a later statement
-- ---
-- write write
-- statements hidden after strings, comments and dollar quotes
SELECT 1; DELETE FROM items
-- ---
-- write write
SELECT 'a'; DELETE FROM items WHERE sku = ';'
-- ---
-- write write
SELECT $$;$$; UPDATE users SET name = 'x'
-- ---
-- write write
SELECT 1 -- comment
; DELETE FROM items
-- ---
-- write write
SELECT 1 /* ; */; DELETE FROM items
-- ---
-- write write
SELECT E'\\'; DELETE FROM items; --'
-- ---
-- write write
-- with standard_conforming_strings on, '\' is a whole literal: the DELETE is code
SELECT '\'; DELETE FROM items; --'
-- ---
-- write write
-- the E'' continuation escapes the quote, so the DELETE is outside the literal
SELECT E'x'
'\'' DELETE FROM users --'
-- ---
-- write write
SELECT 1 AS x; INSERT INTO users (id, name) VALUES (11, 'y'); SELECT 2
-- ---
-- write write
INSERT INTO users (id, name) VALUES (12, 'z'); SELECT 1
-- ---
-- write write
-- conservative: an unreserved keyword used as a column label reads as DML
SELECT 1 AS update
-- ---
-- write locking
-- locking clauses
SELECT * FROM users FOR UPDATE
-- ---
-- write locking
SELECT * FROM users WHERE id = 1 FOR NO KEY UPDATE
-- ---
-- write locking
SELECT * FROM users FOR SHARE
-- ---
-- write locking
SELECT * FROM users FOR KEY SHARE
-- ---
-- write locking
SELECT * FROM orders o JOIN users u ON u.id = o.user_id FOR UPDATE OF o NOWAIT
-- ---
-- write locking
SELECT * FROM orders FOR UPDATE SKIP LOCKED LIMIT 1
-- ---
-- write locking
SELECT * FROM users FOR UPDATE OF users SKIP LOCKED
-- ---
-- write locking
SELECT * FROM users FOR SHARE OF users NOWAIT
-- ---
-- write locking
SELECT * FROM (SELECT * FROM users FOR UPDATE) s
-- ---
-- write locking
WITH x AS (SELECT * FROM users FOR SHARE) SELECT * FROM x
-- ---
-- write locking
select * from users for   update
-- ---
-- write locking
SELECT * FROM users FOR /* comment */ NO -- comment
KEY UPDATE
-- ---
-- write locking
TABLE users FOR UPDATE
-- ---
-- write locking
SELECT 1 FROM users WHERE EXISTS (SELECT 1 FROM orders FOR KEY SHARE)
-- ---
-- write locking
EXPLAIN ANALYZE SELECT * FROM users FOR UPDATE
-- ---
-- write locking
BEGIN READ ONLY; DECLARE c CURSOR FOR SELECT * FROM users FOR UPDATE; COMMIT
-- ---
-- write select_into
-- SELECT ... INTO creates a table
SELECT * INTO new_users FROM users
-- ---
-- write select_into
SELECT id, name INTO TABLE backup FROM users WHERE id = 1
-- ---
-- write select_into
WITH x AS (SELECT 1 AS a) SELECT a INTO t2 FROM x
-- ---
-- write select_into
SELECT * INTO UNLOGGED t3 FROM users
-- ---
-- write select_into
SELECT * INTO TEMP t4 FROM users
-- ---
-- write select_into
SELECT * INTO TEMPORARY TABLE t5 FROM users
-- ---
-- write select_into
SELECT * INTO LOCAL TEMP t6 FROM users
-- ---
-- write select_into
(SELECT 1 INTO t7)
-- ---
-- write cte_write
-- data-modifying CTEs, at any depth
WITH n AS (INSERT INTO users (id, name) VALUES (20, 'z') RETURNING id) SELECT * FROM n
-- ---
-- write cte_write
WITH d AS (DELETE FROM items WHERE qty = 0 RETURNING *) SELECT count(*) FROM d
-- ---
-- write cte_write
WITH u AS (UPDATE users SET name = name RETURNING id) SELECT * FROM u
-- ---
-- write cte_write
WITH m AS (MERGE INTO items i USING users u ON i.id = u.id WHEN MATCHED THEN DELETE RETURNING i.id) SELECT * FROM m
-- ---
-- write cte_write
WITH a AS (SELECT 1), b AS (INSERT INTO users (id, name) VALUES (21, 'q') RETURNING *) SELECT * FROM a, b
-- ---
-- write cte_write
WITH outer_cte AS (WITH inner_cte AS (DELETE FROM items RETURNING id) SELECT id FROM inner_cte)
SELECT * FROM outer_cte
-- ---
-- write cte_write
WITH RECURSIVE r AS (SELECT 1), w AS (DELETE FROM items) SELECT 1
-- ---
-- write cte_write
WITH a AS MATERIALIZED (UPDATE orders SET status = 'x' RETURNING *) SELECT * FROM a
-- ---
-- write cte_write
SELECT * FROM (WITH d AS (DELETE FROM items RETURNING *) SELECT * FROM d) s
-- ---
-- write write
WITH x AS (SELECT 1 AS id) DELETE FROM items WHERE id IN (SELECT id FROM x)
-- ---
-- write write
WITH x AS (SELECT 1) INSERT INTO users (id, name) SELECT 30, 'w'
-- ---
-- write write
WITH x AS (SELECT 1) UPDATE users SET name = 'a'
-- ---
-- write write
WITH x AS (SELECT 1) MERGE INTO items i USING x ON false WHEN NOT MATCHED THEN DO NOTHING
-- ---
-- write function
-- calls of writing functions: built-ins ...
SELECT nextval('order_seq')
-- ---
-- write function
SELECT NEXTVAL('order_seq')
-- ---
-- write function
SELECT NextVal ( 'order_seq' )
-- ---
-- write function
SELECT pg_catalog.nextval('order_seq')
-- ---
-- write function
SELECT "pg_catalog"."nextval"('order_seq')
-- ---
-- write function
SELECT "nextval"('order_seq')
-- ---
-- write function
SELECT pg_catalog . nextval /* c */ ('order_seq')
-- ---
-- write function
SELECT public.nextval('order_seq')
-- ---
-- write function
SELECT setval('order_seq', 200)
-- ---
-- write function
SELECT pg_catalog.setval('order_seq', 1, true)
-- ---
-- write function
SELECT currval('order_seq')
-- ---
-- write function
SELECT lastval()
-- ---
-- write function
SELECT id, nextval('order_seq') FROM users
-- ---
-- write function
SELECT * FROM users WHERE id = (SELECT nextval('order_seq'))
-- ---
-- write function
WITH s AS (SELECT nextval('order_seq') AS v) SELECT v FROM s
-- ---
-- write function
SELECT * FROM nextval('order_seq')
-- ---
-- write function
VALUES (nextval('order_seq'))
-- ---
-- write function
SELECT count(*) FROM orders WHERE id > currval('order_seq')
-- ---
-- write function
SELECT 1; SELECT nextval('order_seq')
-- ---
-- write function
SELECT pg_advisory_lock(42)
-- ---
-- write function
SELECT pg_try_advisory_lock(1, 2)
-- ---
-- write function
SELECT pg_advisory_lock_shared(7), pg_try_advisory_lock_shared(8)
-- ---
-- write function
SELECT pg_advisory_xact_lock(7)
-- ---
-- write function
SELECT pg_advisory_unlock(42), pg_advisory_unlock_all()
-- ---
-- write function
SELECT 1 FROM users WHERE EXISTS (SELECT pg_advisory_lock(id))
-- ---
-- write function
SELECT pg_notify('chan', 'msg')
-- ---
-- write function
SELECT set_config('search_path', 'public', false)
-- ---
-- write function
SELECT lo_create(0)
-- ---
-- write function
SELECT lo_import('/tmp/x')
-- ---
-- write function
SELECT lo_unlink(1234)
-- ---
-- write function
SELECT lo_from_bytea(0, '\xdeadbeef'), lo_put(1234, 0, '\x00')
-- ---
-- write function
SELECT txid_current()
-- ---
-- write function
SELECT pg_current_xact_id()
-- ---
-- write function
SELECT pg_current_wal_lsn()
-- ---
-- write function
SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()
-- ---
-- write function
SELECT pg_switch_wal()
-- ---
-- write function
SELECT pg_create_restore_point('x')
-- ---
-- write function
SELECT pg_backup_start('label')
-- ---
-- write function
SELECT pg_create_physical_replication_slot('s')
-- ---
-- write function
SELECT pg_drop_replication_slot('s')
-- ---
-- write function
SELECT pg_logical_emit_message(true, 'p', 'm')
-- ---
-- write function
SELECT pg_promote()
-- ---
-- write function
SELECT pg_terminate_backend(12345)
-- ---
-- write function
SELECT pg_reload_conf()
-- ---
-- write function
SELECT pg_stat_reset()
-- ---
-- write function
SELECT brin_summarize_new_values('idx')
-- ---
-- write function
SELECT query_to_xml('DELETE FROM items RETURNING 1', true, false, '')
-- ---
-- write function
-- a U&"..." name is not decoded, so it may be any function
SELECT U&"nextval"('order_seq')
-- ---
-- write function
-- ... user functions marked VOLATILE ...
SELECT add_order()
-- ---
-- write function
SELECT public.add_order()
-- ---
-- write function
SELECT ADD_ORDER()
-- ---
-- write function
SELECT "AddOrder"()
-- ---
-- write function
SELECT public."AddOrder"()
-- ---
-- write function
SELECT app.bump()
-- ---
-- write function
SELECT * FROM (SELECT add_order()) s
-- ---
-- write function
WITH w AS (SELECT app.bump()) SELECT * FROM w
-- ---
-- write function
SELECT u.name FROM users u WHERE u.id = (SELECT add_order() LIMIT 1)
-- ---
-- write function
-- ... and write_functions from the config
SELECT audit_log('x')
-- ---
-- write function
SELECT app.touch()
-- ---
-- write function
SELECT "app"."touch"()
-- ---
-- write explain_analyze
-- EXPLAIN ANALYZE runs the statement
EXPLAIN ANALYZE DELETE FROM items
-- ---
-- write explain_analyze
EXPLAIN ANALYZE INSERT INTO users VALUES (1)
-- ---
-- write explain_analyze
EXPLAIN (ANALYZE) DELETE FROM items
-- ---
-- write explain_analyze
EXPLAIN (ANALYZE true, BUFFERS) UPDATE users SET name = 'x'
-- ---
-- write explain_analyze
EXPLAIN (BUFFERS, ANALYZE) MERGE INTO items i USING users u ON i.id = u.id WHEN MATCHED THEN DELETE
-- ---
-- write explain_analyze
EXPLAIN (ANALYZE 'on') DELETE FROM items
-- ---
-- write explain_analyze
EXPLAIN (ANALYZE 1, FORMAT json) DELETE FROM items
-- ---
-- write explain_analyze
EXPLAIN (analyse) delete from items
-- ---
-- write explain_analyze
EXPLAIN ANALYSE VERBOSE DELETE FROM items
-- ---
-- write explain_analyze
EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1
-- ---
-- write function
EXPLAIN ANALYZE SELECT nextval('order_seq')
-- ---
-- write cte_write
EXPLAIN ANALYZE WITH d AS (DELETE FROM items RETURNING 1) SELECT * FROM d
-- ---
-- write select_into
EXPLAIN ANALYZE SELECT * INTO t FROM users
-- ---
-- write execute
EXPLAIN EXECUTE p
-- ---
-- write execute
-- prepared statements: the session layer resolves EXECUTE, the classifier cannot
EXECUTE q1
-- ---
-- write execute
EXECUTE q2(1, 'x')
-- ---
-- write write
PREPARE w1 AS DELETE FROM items WHERE id = $1
-- ---
-- write function
PREPARE w2 AS SELECT nextval('order_seq')
-- ---
-- write write
PREPARE TRANSACTION 'gid'
-- ---
-- write write
COMMIT PREPARED 'gid'
-- ---
-- write write
ROLLBACK PREPARED 'gid'
-- ---
-- write transaction
-- transactions: plain BEGIN keeps the whole transaction on the leader
BEGIN
-- ---
-- write transaction
BEGIN WORK
-- ---
-- write transaction
BEGIN TRANSACTION
-- ---
-- write transaction
START TRANSACTION
-- ---
-- write transaction
BEGIN READ WRITE
-- ---
-- write transaction
BEGIN ISOLATION LEVEL SERIALIZABLE
-- ---
-- write transaction
START TRANSACTION ISOLATION LEVEL REPEATABLE READ
-- ---
-- write transaction
BEGIN; SELECT 1; COMMIT
-- ---
-- write transaction
SELECT 1; BEGIN; SELECT 2; COMMIT
-- ---
-- write transaction
BEGIN READ ONLY, READ WRITE
-- ---
-- write serializable
-- a standby refuses serializable transactions
BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY; SELECT 1; COMMIT
-- ---
-- write serializable
BEGIN READ ONLY, ISOLATION LEVEL SERIALIZABLE, DEFERRABLE
-- ---
-- write serializable
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE
-- ---
-- write serializable
SET transaction_isolation = 'serializable'
-- ---
-- write transaction
SET TRANSACTION READ WRITE
-- ---
-- write transaction
SET transaction_read_only = off
-- ---
-- write write
BEGIN READ ONLY; INSERT INTO users (id, name) VALUES (13, 'n'); COMMIT
-- ---
-- write write
SET TRANSACTION SNAPSHOT '00000003-0000001B-1'
-- ---
-- write pin
-- session state that pins the client to one leader connection
LISTEN chan
-- ---
-- write pin
SELECT 1; LISTEN "Chan"
-- ---
-- write pin
DECLARE c3 CURSOR WITH HOLD FOR SELECT * FROM users
-- ---
-- write pin
DECLARE c5 BINARY INSENSITIVE SCROLL CURSOR WITH HOLD FOR SELECT 1
-- ---
-- write function
BEGIN READ ONLY; DECLARE c4 NO SCROLL CURSOR FOR SELECT nextval('order_seq'); COMMIT
-- ---
-- write pin
CREATE TEMP TABLE tmp1 (a int)
-- ---
-- write pin
CREATE TEMPORARY TABLE tmp2 AS SELECT * FROM users
-- ---
-- write pin
CREATE GLOBAL TEMPORARY TABLE tmp3 (a int)
-- ---
-- write pin
CREATE LOCAL TEMP TABLE tmp4 (a int)
-- ---
-- write pin
CREATE OR REPLACE TEMP VIEW v1 AS SELECT 1
-- ---
-- write pin
CREATE TEMP SEQUENCE s1
-- ---
-- write pin
CREATE TEMP RECURSIVE VIEW v3(n) AS VALUES (1)
-- ---
-- write pin
CREATE TABLE pg_temp.tmp5 (a int)
-- ---
-- write pin
CREATE TABLE IF NOT EXISTS pg_temp.tmp6 (a int)
-- ---
-- write write
-- COPY FROM, and COPY to a server file or program
COPY users FROM STDIN
-- ---
-- write write
COPY users (id, name) FROM STDIN WITH (FORMAT csv) WHERE id > 0
-- ---
-- write write
COPY BINARY users FROM STDIN
-- ---
-- write write
COPY users TO '/tmp/users.csv'
-- ---
-- write write
COPY users TO PROGRAM 'gzip > /tmp/u.gz'
-- ---
-- write write
COPY users FROM '/tmp/users.csv'
-- ---
-- write write
COPY (DELETE FROM items RETURNING *) TO STDOUT
-- ---
-- write function
COPY (SELECT nextval('order_seq')) TO STDOUT
-- ---
-- write locking
COPY (SELECT * FROM users FOR UPDATE) TO STDOUT
