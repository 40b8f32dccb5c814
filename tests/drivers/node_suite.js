// node-postgres (pg) through pgsplit: named queries ({name, text, values}), i.e. named server-side prepared
// statements parsed once per connection and executed again and again; COPY through pg-copy-streams.
//
// Run by tests/drivers.rs with DATABASE_URL pointing at pgsplit and NODE_PATH at the installed modules. Exits
// non-zero with a message on the first failed check; prints one summary line on success. Reads of rows written
// moments ago run inside explicit transactions (on the leader): an autocommit read may be served by a follower that
// has not replayed them yet.
'use strict';

const { Readable } = require('stream');
const { pipeline } = require('stream/promises');
const pg = require('pg');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');

const DRIVER = 'node-postgres';
// SUITE_TAG tells a variant of this suite (over TLS) from the plain one: their objects never collide.
const PREFIX = 'drv_node' + (process.env.SUITE_TAG || '');
const ITEMS = `${PREFIX}_items`;
const COPY_TABLE = `${PREFIX}_copy`;
const SCHEMA = `${PREFIX}_schema`;
const CHANNEL = `${PREFIX}_chan`;
const CLIENTS = 16;
// Fewer for the TLS variant (SUITE_ROUNDS), which runs the same checks over TLS.
const ROUNDS = Number(process.env.SUITE_ROUNDS || 25);
const COPY_ROWS = 500;
const TIME_LIMIT_MS = 60000;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function connect() {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 10000 });
  await client.connect();
  return client;
}

async function setup(client) {
  for (const sql of [
    `DROP TABLE IF EXISTS ${ITEMS}, ${COPY_TABLE}`,
    `DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`,
    `CREATE SCHEMA ${SCHEMA}`,
    `CREATE TABLE ${SCHEMA}.sp_marker (driver text NOT NULL)`,
    `INSERT INTO ${SCHEMA}.sp_marker VALUES ('${DRIVER}')`,
    `CREATE TABLE ${ITEMS} (id bigserial PRIMARY KEY, client int NOT NULL, n int NOT NULL, val text NOT NULL)`,
    `CREATE TABLE ${COPY_TABLE} (id int PRIMARY KEY, label text, amount bigint NOT NULL)`,
  ]) {
    await client.query(sql);
  }
}

// The named statements every client runs, each parsed once per connection.
const Q = {
  insert: `INSERT INTO ${ITEMS} (client, n, val) VALUES ($1, $2, $3) RETURNING id`,
  get: `SELECT client, n, val FROM ${ITEMS} WHERE id = $1`,
  update: `UPDATE ${ITEMS} SET val = $2 WHERE id = $1`,
  marker: 'SELECT driver FROM sp_marker',
  calc: 'SELECT $1::int * 2 + $2::int AS v',
  count: `SELECT count(*)::int AS n FROM ${ITEMS} WHERE client = $1`,
  updated: `SELECT count(*)::int AS n FROM ${ITEMS} WHERE client = $1 AND val LIKE '%-u'`,
  deleteEvens: `DELETE FROM ${ITEMS} WHERE client = $1 AND n % 2 = 0`,
};

function named(client, name, values = []) {
  return client.query({ name, text: Q[name], values });
}

async function count(client, id) {
  return (await named(client, 'count', [id])).rows[0].n;
}

// CRUD, transactions and named statements on one connection; search_path set once, used by every round.
async function worker(client, id) {
  await client.query(`SET search_path TO ${SCHEMA}, public`);
  for (let i = 0; i < ROUNDS; i++) {
    const val = `c${id}-${i}`;
    await client.query('BEGIN');
    const rowId = (await named(client, 'insert', [id, i, val])).rows[0].id;
    const got = (await named(client, 'get', [rowId])).rows[0];
    check(got && got.client === id && got.n === i && got.val === val,
      `client ${id}: read-after-write of id ${rowId} gave ${JSON.stringify(got)}`);
    const updated = (await named(client, 'update', [rowId, `${val}-u`])).rowCount;
    check(updated === 1, `client ${id}: UPDATE of id ${rowId} touched ${updated} rows`);
    const marker = (await named(client, 'marker')).rows[0].driver;
    check(marker === DRIVER, `client ${id}: unqualified sp_marker (search_path) gave ${marker}`);
    await client.query('COMMIT');
    // Autocommit reads independent of replication: these may run on a follower.
    const doubled = (await named(client, 'calc', [i, id])).rows[0].v;
    check(doubled === i * 2 + id, `client ${id}: ${i}*2+${id} gave ${doubled}`);
  }
  const path = (await client.query("SELECT current_setting('search_path') AS p")).rows[0].p;
  check(path.includes(SCHEMA), `client ${id}: search_path is ${path} after ${ROUNDS} transactions`);

  await client.query('BEGIN');
  const total = await count(client, id);
  const updated = (await named(client, 'updated', [id])).rows[0].n;
  await client.query('COMMIT');
  check(total === ROUNDS && updated === ROUNDS, `client ${id}: (rows, updated) = (${total}, ${updated})`);

  const evens = Math.floor((ROUNDS + 1) / 2);
  await client.query('BEGIN');
  const deleted = (await named(client, 'deleteEvens', [id])).rowCount;
  check(deleted === evens, `client ${id}: deleted ${deleted} rows, expected ${evens}`);
  let left = await count(client, id);
  check(left === ROUNDS - evens, `client ${id}: ${left} rows inside the deleting transaction`);
  await client.query('ROLLBACK');
  await client.query('BEGIN');
  left = await count(client, id);
  await client.query('COMMIT');
  check(left === ROUNDS, `client ${id}: ${left} rows after ROLLBACK, expected ${ROUNDS}`);

  await client.query('BEGIN');
  await named(client, 'deleteEvens', [id]);
  await client.query('COMMIT');
  await client.query('BEGIN');
  left = await count(client, id);
  await client.query('COMMIT');
  check(left === ROUNDS - evens, `client ${id}: ${left} rows after the committed DELETE`);
}

// A client that failed disconnects at once, so a transaction it left open holds no server connection.
async function guardedWorker(client, id) {
  try {
    await worker(client, id);
  } catch (error) {
    await client.end().catch(() => {});
    throw error;
  }
}

// All clients connected first, then run at once; every failure is reported, the first one with its stack.
async function crudAndPrepared() {
  const clients = await Promise.all(Array.from({ length: CLIENTS }, connect));
  let results;
  try {
    results = await Promise.allSettled(clients.map(guardedWorker));
  } finally {
    await Promise.allSettled(clients.map((client) => client.end()));
  }
  const failures = results.flatMap((r, id) => (r.status === 'rejected' ? [[id, r.reason]] : []));
  if (failures.length > 0) {
    const [id, first] = failures[0];
    const distinct = [...new Set(failures.map(([, e]) => String(e.message).split('\n')[0]))].sort();
    if (distinct.length > 5) distinct.splice(5, Infinity, `... ${distinct.length - 5} more`);
    throw new Error(`${failures.length} of ${CLIENTS} clients failed; distinct errors: ${JSON.stringify(distinct)}\n` +
      `first, client ${id}: ${first.stack || first}`);
  }
}

async function listenNotify() {
  const payloads = [0, 1, 2].map((n) => `${DRIVER}-payload-${n}`);
  const listener = await connect();
  const notifier = await connect();
  try {
    const received = [];
    let timer;
    const all = new Promise((resolve) => {
      listener.on('notification', (msg) => {
        received.push([msg.channel, msg.payload]);
        if (received.length === payloads.length) resolve();
      });
    });
    await listener.query(`LISTEN ${CHANNEL}`);
    for (const payload of payloads) {
      await notifier.query({ name: 'notify', text: 'SELECT pg_notify($1, $2)', values: [CHANNEL, payload] });
    }
    await Promise.race([all, new Promise((resolve) => { timer = setTimeout(resolve, 10000); })]);
    clearTimeout(timer);
    const want = JSON.stringify(payloads.map((p) => [CHANNEL, p]));
    check(JSON.stringify(received) === want, `LISTEN got ${JSON.stringify(received)}, expected ${want}`);
  } finally {
    await listener.end();
    await notifier.end();
  }
}

function copyRows() {
  const rows = [];
  for (let i = 1; i <= COPY_ROWS; i++) {
    let label = `row ${i}`;
    if (i % 7 === 0) label = null;
    else if (i % 3 === 0) label = `row ${i}\ttab \\ backslash\nnewline ü`;
    rows.push([i, label, i * i]);
  }
  return rows;
}

const ENCODE = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };
const DECODE = { '\\': '\\', t: '\t', n: '\n', r: '\r', b: '\b', f: '\f', v: '\v' };

// COPY's text format, one field: NULL is \N, backslash escapes for the delimiter, newlines and backslash.
function encodeField(value) {
  return value === null ? '\\N' : String(value).replace(/[\\\t\n\r]/g, (ch) => ENCODE[ch]);
}

function decodeField(field) {
  return field === '\\N' ? null : field.replace(/\\(.)/g, (_, ch) => DECODE[ch] ?? ch);
}

async function copyBothWays() {
  const expected = copyRows();
  const client = await connect();
  let text = '';
  try {
    const lines = expected.map((row) => `${row.map(encodeField).join('\t')}\n`);
    await pipeline(Readable.from(lines), client.query(copyFrom(`COPY ${COPY_TABLE} (id, label, amount) FROM STDIN`)));
    await client.query('BEGIN');
    const chunks = [];
    const out = client.query(copyTo(`COPY (SELECT id, label, amount FROM ${COPY_TABLE} ORDER BY id) TO STDOUT`));
    for await (const chunk of out) chunks.push(chunk);
    await client.query('COMMIT');
    text = Buffer.concat(chunks).toString('utf8');
  } finally {
    await client.end();
  }
  check(text.endsWith('\n'), 'COPY TO output does not end with a newline');
  const got = text.slice(0, -1).split('\n').map((line) => {
    const [id, label, amount] = line.split('\t').map(decodeField);
    return [Number(id), label, Number(amount)];
  });
  check(got.length === expected.length, `COPY TO returned ${got.length} rows, expected ${expected.length}`);
  expected.forEach((want, i) => {
    const [a, b] = [JSON.stringify(want), JSON.stringify(got[i])];
    check(a === b, `COPY round trip: wrote ${a}, read ${b}`);
  });
}

const PHASES = [
  ['CRUD, transactions, prepared statements, search_path', crudAndPrepared],
  ['LISTEN/NOTIFY', listenNotify],
  ['COPY', copyBothWays],
];

// Runs every phase (after setup), so one failure does not hide the state of the others.
async function main() {
  const started = Date.now();
  const admin = await connect();
  try {
    await setup(admin);
  } finally {
    await admin.end();
  }
  const failed = [];
  for (const [name, phase] of PHASES) {
    try {
      await phase();
    } catch (error) {
      console.error(`${DRIVER}: ${name} FAILED: ${error.stack || error}`);
      failed.push(name);
    }
  }
  if (failed.length > 0) throw new Error(`failed in: ${failed.join('; ')}`);
  const version = require('pg/package.json').version;
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`${DRIVER} ${version} ok: ${CLIENTS} clients x ${ROUNDS} prepared rounds, transactions, ` +
    `search_path, LISTEN/NOTIFY, COPY ${COPY_ROWS} rows both ways in ${seconds}s`);
}

const timer = setTimeout(() => {
  console.error(`${DRIVER} suite FAILED: still running after ${TIME_LIMIT_MS} ms`);
  process.exit(1);
}, TIME_LIMIT_MS);
main().then(
  () => clearTimeout(timer),
  (error) => {
    console.error(`${DRIVER} suite FAILED: ${error.stack || error}`);
    process.exit(1);
  },
);
