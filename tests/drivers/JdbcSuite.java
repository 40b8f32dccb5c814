// pgjdbc through pgsplit, with prepareThreshold=1: every PreparedStatement is a named server-side statement from its
// first execution, then re-executed by name; COPY through CopyManager, notifications through PGConnection.
//
// Run by tests/drivers.rs (compiled with javac against Debian's /usr/share/java/postgresql.jar) with DATABASE_URL
// pointing at pgsplit. Exits non-zero with a message on the first failed check; prints one summary line on success.
// Reads of rows written moments ago run inside explicit transactions (on the leader): an autocommit read may be
// served by a follower that has not replayed them yet.

import java.io.StringReader;
import java.io.StringWriter;
import java.net.URI;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;

public final class JdbcSuite {
    static final String DRIVER = "pgjdbc";
    /** SUITE_TAG tells a variant of this suite (over TLS) from the plain one: their objects never collide. */
    static final String PREFIX = "drv_jdbc" + Objects.requireNonNullElse(System.getenv("SUITE_TAG"), "");
    static final String ITEMS = PREFIX + "_items";
    static final String COPY_TABLE = PREFIX + "_copy";
    static final String SCHEMA = PREFIX + "_schema";
    static final String CHANNEL = PREFIX + "_chan";
    static final int CLIENTS = 16;
    /** Fewer for the TLS variant (SUITE_ROUNDS), which runs the same checks over TLS. */
    static final int ROUNDS = Integer.parseInt(Objects.requireNonNullElse(System.getenv("SUITE_ROUNDS"), "25"));
    static final int COPY_ROWS = 500;
    static final long DEADLINE = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);

    static String jdbcUrl;
    static final Properties PROPS = new Properties();

    static final class SuiteError extends RuntimeException {
        SuiteError(String message) {
            super(message);
        }
    }

    static void check(boolean condition, String message) {
        if (!condition) throw new SuiteError(message);
    }

    static void inTime(String what) {
        check(System.nanoTime() < DEADLINE, "out of time during " + what);
    }

    /** DATABASE_URL (postgresql://user:password@host:port/database[?sslmode=…]) as a JDBC URL plus credentials. */
    static void configure(String databaseUrl) {
        URI uri = URI.create(databaseUrl);
        String[] userInfo = uri.getUserInfo().split(":", 2);
        String query = uri.getQuery() == null ? "" : "?" + uri.getQuery();
        jdbcUrl = "jdbc:postgresql://" + uri.getHost() + ":" + uri.getPort() + uri.getPath() + query;
        PROPS.setProperty("user", userInfo[0]);
        PROPS.setProperty("password", userInfo[1]);
        PROPS.setProperty("prepareThreshold", "1");
        PROPS.setProperty("connectTimeout", "10");
    }

    static Connection connect() throws SQLException {
        return DriverManager.getConnection(jdbcUrl, PROPS);
    }

    static void setup(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement()) {
            for (String sql : new String[] {
                "DROP TABLE IF EXISTS " + ITEMS + ", " + COPY_TABLE,
                "DROP SCHEMA IF EXISTS " + SCHEMA + " CASCADE",
                "CREATE SCHEMA " + SCHEMA,
                "CREATE TABLE " + SCHEMA + ".sp_marker (driver text NOT NULL)",
                "INSERT INTO " + SCHEMA + ".sp_marker VALUES ('" + DRIVER + "')",
                "CREATE TABLE " + ITEMS
                    + " (id bigserial PRIMARY KEY, client int NOT NULL, n int NOT NULL, val text NOT NULL)",
                "CREATE TABLE " + COPY_TABLE + " (id int PRIMARY KEY, label text, amount bigint NOT NULL)",
            }) {
                st.execute(sql);
            }
        }
    }

    /** The one-row, one-column answer of `ps` (executed with its current parameters). */
    static Object single(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            check(rs.next(), "no row from " + ps);
            return rs.getObject(1);
        }
    }

    /** One client: CRUD, transactions and prepared statements; search_path set once, used by every round. */
    static void worker(Connection conn, int client) throws Exception {
        try (conn) {
            try (Statement st = conn.createStatement()) {
                st.execute("SET search_path TO " + SCHEMA + ", public");
            }
            PreparedStatement insert = conn.prepareStatement(
                "INSERT INTO " + ITEMS + " (client, n, val) VALUES (?, ?, ?) RETURNING id");
            PreparedStatement get = conn.prepareStatement("SELECT client, n, val FROM " + ITEMS + " WHERE id = ?");
            PreparedStatement update = conn.prepareStatement("UPDATE " + ITEMS + " SET val = ? WHERE id = ?");
            PreparedStatement marker = conn.prepareStatement("SELECT driver FROM sp_marker");
            PreparedStatement calc = conn.prepareStatement("SELECT ?::int * 2 + ?::int");
            PreparedStatement count = conn.prepareStatement("SELECT count(*)::int FROM " + ITEMS + " WHERE client = ?");
            PreparedStatement updated = conn.prepareStatement(
                "SELECT count(*)::int FROM " + ITEMS + " WHERE client = ? AND val LIKE '%-u'");
            PreparedStatement deleteEvens = conn.prepareStatement(
                "DELETE FROM " + ITEMS + " WHERE client = ? AND n % 2 = 0");
            count.setInt(1, client);
            updated.setInt(1, client);
            deleteEvens.setInt(1, client);

            for (int i = 0; i < ROUNDS; i++) {
                inTime("client " + client + " round " + i);
                String val = "c" + client + "-" + i;
                conn.setAutoCommit(false);
                insert.setInt(1, client);
                insert.setInt(2, i);
                insert.setString(3, val);
                long id = (Long) single(insert);
                get.setLong(1, id);
                try (ResultSet rs = get.executeQuery()) {
                    check(rs.next(), "client " + client + ": read-after-write of id " + id + " found nothing");
                    List<Object> got = List.of(rs.getInt(1), rs.getInt(2), rs.getString(3));
                    check(got.equals(List.of(client, i, val)),
                        "client " + client + ": read-after-write of id " + id + " gave " + got);
                }
                update.setString(1, val + "-u");
                update.setLong(2, id);
                int touched = update.executeUpdate();
                check(touched == 1, "client " + client + ": UPDATE of id " + id + " touched " + touched + " rows");
                Object found = single(marker);
                check(DRIVER.equals(found), "client " + client + ": unqualified sp_marker (search_path) gave " + found);
                conn.commit();
                conn.setAutoCommit(true);
                // Autocommit reads independent of replication: these may run on a follower.
                calc.setInt(1, i);
                calc.setInt(2, client);
                Object doubled = single(calc);
                check(Objects.equals(doubled, i * 2 + client),
                    "client " + client + ": " + i + "*2+" + client + " gave " + doubled);
            }
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT current_setting('search_path')")) {
                String path = rs.next() ? rs.getString(1) : null;
                check(path != null && path.contains(SCHEMA),
                    "client " + client + ": search_path is " + path + " after " + ROUNDS + " transactions");
            }

            conn.setAutoCommit(false);
            List<Object> totals = List.of(single(count), single(updated));
            conn.commit();
            check(totals.equals(List.of(ROUNDS, ROUNDS)), "client " + client + ": (rows, updated) = " + totals);

            int evens = (ROUNDS + 1) / 2;
            int deleted = deleteEvens.executeUpdate();
            check(deleted == evens, "client " + client + ": deleted " + deleted + " rows, expected " + evens);
            Object left = single(count);
            check(Objects.equals(left, ROUNDS - evens),
                "client " + client + ": " + left + " rows inside the deleting transaction");
            conn.rollback();
            left = single(count);
            conn.commit();
            check(Objects.equals(left, ROUNDS),
                "client " + client + ": " + left + " rows after ROLLBACK, expected " + ROUNDS);

            deleteEvens.executeUpdate();
            conn.commit();
            left = single(count);
            conn.commit();
            check(Objects.equals(left, ROUNDS - evens),
                "client " + client + ": " + left + " rows after the committed DELETE");
        }
    }

    /** All clients connected first, then run at once; every failure is reported. */
    static void crudAndPrepared() throws Exception {
        List<Connection> conns = new ArrayList<>();
        ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
        List<Future<?>> futures = new ArrayList<>();
        try {
            for (int client = 0; client < CLIENTS; client++) conns.add(connect());
            for (int client = 0; client < CLIENTS; client++) {
                Connection conn = conns.get(client);
                int c = client;
                // The worker closes its connection, at once if it fails, so an open transaction holds no server.
                futures.add(pool.submit(() -> {
                    worker(conn, c);
                    return null;
                }));
            }
        } finally {
            pool.shutdown();
            if (futures.isEmpty()) for (Connection conn : conns) conn.close();
        }
        List<Throwable> failures = new ArrayList<>();
        for (Future<?> future : futures) {
            try {
                future.get(Math.max(1, DEADLINE - System.nanoTime()), TimeUnit.NANOSECONDS);
            } catch (ExecutionException e) {
                failures.add(e.getCause());
            }
        }
        pool.shutdownNow();
        if (!failures.isEmpty()) {
            TreeSet<String> distinct = new TreeSet<>();
            for (Throwable f : failures) {
                distinct.add(f.getClass().getSimpleName() + ": " + String.valueOf(f.getMessage()).split("\n")[0]);
            }
            List<String> shown = new ArrayList<>(distinct).subList(0, Math.min(5, distinct.size()));
            SuiteError error = new SuiteError(
                failures.size() + " of " + CLIENTS + " clients failed; distinct errors: " + shown);
            error.initCause(failures.get(0));
            throw error;
        }
    }

    static void listenNotify() throws SQLException {
        List<String> payloads = List.of(DRIVER + "-payload-0", DRIVER + "-payload-1", DRIVER + "-payload-2");
        try (Connection listener = connect(); Connection notifier = connect()) {
            try (Statement st = listener.createStatement()) {
                st.execute("LISTEN " + CHANNEL);
            }
            try (PreparedStatement notify = notifier.prepareStatement("SELECT pg_notify(?, ?)")) {
                for (String payload : payloads) {
                    notify.setString(1, CHANNEL);
                    notify.setString(2, payload);
                    notify.executeQuery().close();
                }
            }
            PGConnection pg = listener.unwrap(PGConnection.class);
            List<String> received = new ArrayList<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (received.size() < payloads.size()) {
                long waitMillis = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                if (waitMillis <= 0) break;
                PGNotification[] batch = pg.getNotifications((int) waitMillis);
                for (PGNotification n : batch == null ? new PGNotification[0] : batch) {
                    received.add(n.getName() + ":" + n.getParameter());
                }
            }
            List<String> want = payloads.stream().map(p -> CHANNEL + ":" + p).toList();
            check(received.equals(want), "LISTEN got " + received + ", expected " + want);
        }
    }

    static List<List<Object>> copyRows() {
        List<List<Object>> rows = new ArrayList<>();
        for (int i = 1; i <= COPY_ROWS; i++) {
            String label = i % 7 == 0 ? null : i % 3 == 0 ? "row " + i + "\ttab \\ backslash\nnewline ü" : "row " + i;
            rows.add(Arrays.asList(i, label, (long) i * i));
        }
        return rows;
    }

    /** COPY's text format, one field: NULL is \N, backslash escapes for the delimiter, newlines and backslash. */
    static String encodeField(Object value) {
        if (value == null) return "\\N";
        return value.toString().replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r");
    }

    static String decodeField(String field) {
        if (field.equals("\\N")) return null;
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < field.length(); i++) {
            char ch = field.charAt(i);
            if (ch != '\\' || i + 1 == field.length()) {
                out.append(ch);
                continue;
            }
            char next = field.charAt(++i);
            out.append(switch (next) {
                case 't' -> '\t';
                case 'n' -> '\n';
                case 'r' -> '\r';
                case 'b' -> '\b';
                case 'f' -> '\f';
                case 'v' -> '\u000b';
                default -> next;
            });
        }
        return out.toString();
    }

    static void copyBothWays() throws Exception {
        List<List<Object>> expected = copyRows();
        StringBuilder in = new StringBuilder();
        for (List<Object> row : expected) {
            in.append(encodeField(row.get(0))).append('\t').append(encodeField(row.get(1))).append('\t')
                .append(encodeField(row.get(2))).append('\n');
        }
        StringWriter out = new StringWriter();
        try (Connection conn = connect()) {
            CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
            String copyIn = "COPY " + COPY_TABLE + " (id, label, amount) FROM STDIN";
            long copied = copy.copyIn(copyIn, new StringReader(in.toString()));
            check(copied == COPY_ROWS, "COPY FROM STDIN reported " + copied + " rows");
            conn.setAutoCommit(false);
            copy.copyOut("COPY (SELECT id, label, amount FROM " + COPY_TABLE + " ORDER BY id) TO STDOUT", out);
            conn.commit();
        }
        String text = out.toString();
        check(text.endsWith("\n"), "COPY TO output does not end with a newline");
        List<List<Object>> got = new ArrayList<>();
        for (String line : text.substring(0, text.length() - 1).split("\n", -1)) {
            String[] f = line.split("\t", -1);
            check(f.length == 3, "COPY TO line with " + f.length + " fields: " + line);
            got.add(Arrays.asList(Integer.parseInt(f[0]), decodeField(f[1]), Long.parseLong(f[2])));
        }
        check(got.size() == expected.size(), "COPY TO returned " + got.size() + " rows, expected " + expected.size());
        for (int i = 0; i < expected.size(); i++) {
            check(expected.get(i).equals(got.get(i)),
                "COPY round trip: wrote " + expected.get(i) + ", read " + got.get(i));
        }
    }

    interface Phase {
        void run() throws Exception;
    }

    /** Runs every phase (after setup), so one failure does not hide the state of the others. */
    public static void main(String[] args) throws Exception {
        long started = System.nanoTime();
        configure(Objects.requireNonNull(System.getenv("DATABASE_URL"), "DATABASE_URL is not set"));
        try (Connection conn = connect()) {
            setup(conn);
        }
        List<String> failed = new ArrayList<>();
        String[] names = {"CRUD, transactions, prepared statements, search_path", "LISTEN/NOTIFY", "COPY"};
        Phase[] phases = {JdbcSuite::crudAndPrepared, JdbcSuite::listenNotify, JdbcSuite::copyBothWays};
        for (int p = 0; p < phases.length; p++) {
            try {
                phases[p].run();
            } catch (Exception e) {
                e.printStackTrace();
                System.err.println(DRIVER + ": " + names[p] + " FAILED: " + e);
                failed.add(names[p]);
            }
        }
        if (!failed.isEmpty()) {
            System.err.println(DRIVER + " suite FAILED in: " + String.join("; ", failed));
            System.exit(1);
        }
        String version = org.postgresql.util.DriverInfo.DRIVER_VERSION;
        System.out.printf("%s %s ok: %d clients x %d prepared rounds, transactions, search_path, LISTEN/NOTIFY, "
            + "COPY %d rows both ways in %.1fs%n", DRIVER, version, CLIENTS, ROUNDS, COPY_ROWS,
            (System.nanoTime() - started) / 1e9);
    }
}
