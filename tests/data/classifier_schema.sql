-- Objects that tests/data/classifier_corpus.sql refers to. Run once on the leader (psql -f); followers replicate it.
-- Every `-- read` record of the corpus must succeed against this schema on a PostgreSQL 15 hot standby.
-- Re-runnable: it drops what it creates first.

DROP VIEW IF EXISTS user_totals;
DROP TABLE IF EXISTS items, orders, users CASCADE;
DROP SCHEMA IF EXISTS app CASCADE;
DROP SEQUENCE IF EXISTS order_seq;
DROP TYPE IF EXISTS mood;
DROP FUNCTION IF EXISTS add_order(), "AddOrder"(), addorder(), double_it(int), random_pick(), audit_log(text);

CREATE SEQUENCE order_seq;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');

CREATE TABLE users (
    id         int PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    mood       mood NOT NULL DEFAULT 'ok',
    data       jsonb NOT NULL DEFAULT '{}',
    tags       text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id        bigint PRIMARY KEY DEFAULT nextval('order_seq'),
    user_id   int NOT NULL REFERENCES users,
    total     numeric(10, 2) NOT NULL,
    status    text NOT NULL DEFAULT 'new',
    placed_at timestamptz NOT NULL DEFAULT now()
);

-- "delete" and "Weird ""Name""" are quoted identifiers the corpus reads.
CREATE TABLE items (
    id               int PRIMARY KEY,
    order_id         bigint NOT NULL REFERENCES orders,
    sku              text NOT NULL,
    qty              int NOT NULL,
    "delete"         boolean NOT NULL DEFAULT false,
    "Weird ""Name""" text
);

CREATE VIEW user_totals AS
    SELECT u.id, u.name, coalesce(sum(o.total), 0) AS total
    FROM users u LEFT JOIN orders o ON o.user_id = u.id
    GROUP BY u.id, u.name;

CREATE SCHEMA app;
CREATE TABLE app.events (id serial PRIMARY KEY, kind text NOT NULL, at timestamptz NOT NULL DEFAULT now());

-- The FunctionSet of the corpus test: volatile user functions (as pg_proc would list them) ...
CREATE FUNCTION add_order() RETURNS bigint LANGUAGE sql VOLATILE
    AS $$ INSERT INTO orders (user_id, total) VALUES (1, 9.99) RETURNING id $$;
CREATE FUNCTION "AddOrder"() RETURNS bigint LANGUAGE sql VOLATILE AS 'SELECT add_order()';
CREATE FUNCTION app.bump() RETURNS void LANGUAGE sql VOLATILE AS $$ INSERT INTO app.events (kind) VALUES ('bump') $$;
-- ... one of them listed in read_only_functions (volatile because of random(), but it only reads) ...
CREATE FUNCTION random_pick() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT id FROM users ORDER BY random() LIMIT 1';
-- ... writers named in write_functions ...
CREATE FUNCTION audit_log(text) RETURNS void LANGUAGE sql VOLATILE AS $$ INSERT INTO app.events (kind) VALUES ($1) $$;
CREATE FUNCTION app.touch() RETURNS void LANGUAGE sql VOLATILE AS $$ INSERT INTO app.events (kind) VALUES ('touch') $$;
-- ... and harmless ones (addorder is not "AddOrder": unquoted names fold to lower case).
CREATE FUNCTION double_it(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
CREATE FUNCTION addorder() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';

INSERT INTO users (id, name, email, mood, data, tags) VALUES
    (1, 'Ann', 'ann@example.com', 'happy', '{"plan": "pro", "age": 31}', '{admin,beta}'),
    (2, 'Bob', NULL, 'ok', '{"plan": "free"}', '{beta}'),
    (3, 'O''Brien', 'ob@example.com', 'sad', '{}', '{}');
SELECT setval('order_seq', 100);
INSERT INTO orders (user_id, total, status) VALUES (1, 10.50, 'paid'), (1, 20.00, 'new'), (2, 5.25, 'paid');
INSERT INTO items (id, order_id, sku, qty, "delete", "Weird ""Name""") VALUES
    (1, 101, 'A-1', 2, false, 'x'),
    (2, 101, 'B-2', 1, true, NULL),
    (3, 103, 'A-1', 5, false, 'y');
ANALYZE users, orders, items;
