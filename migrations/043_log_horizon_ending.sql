-- The horizon let readers pass an append transaction that was ending: events lost.
--
-- 042 skipped every running transaction that pg_locks shows holding its transaction id without the
-- append mark in the same virtual transaction. But pg_locks reads a backend's virtual transaction id
-- afresh for each row, without the lock that guards it, and a transaction that is ending sets it to
-- N/0 when it leaves the proc array (from then on it is not running for new snapshots, though it still
-- is for a snapshot taken a moment before), while its locks are released only after that. Within one
-- read of pg_locks, an append's mark and its transaction id can show different virtual transaction
-- ids. The horizon then took the append for a transaction without the mark and let the read pass it,
-- though the read's snapshot could not see its events: the read returned events of younger
-- transactions, and the append's events, committed at older positions, were never read. Seen in
-- 600 s soaks of the store under load (bench/log-soak.ts: 7 and 8 events lost of about 800,000).
-- Instrumented, one such run let 3 appends pass: 2 showed their transaction id held under N/0, 1 under
-- a live id, and none had a mark row under the same id.
--
-- Now a transaction is let pass only when pg_locks shows it holding its transaction id with a live
-- virtual transaction (not `N/0`: not ending), in a backend (a pid: a prepared transaction has none)
-- that holds no append mark. The mark is matched by pid, which does not change under the read: a
-- backend runs one transaction at a time, and the mark, taken before the transaction has an id, is
-- released only after the transaction has left the proc array, so while the id's row shows a live
-- virtual transaction, an append's mark is in the same read. Anything else is held back: lag, never
-- loss.
--
-- phoenix_log_horizon_of is the rule alone, over given lock rows, so that each of these cases is tested
-- (test/event-store.conformance.int.test.ts); phoenix_log_horizon feeds it pg_locks, read once.

CREATE TYPE phoenix_xid_holder AS (
  xid xid,       -- a transaction id that pg_locks shows held (ExclusiveLock, granted)
  pid int,       -- the backend holding it; NULL for a prepared transaction
  running bool   -- its virtual transaction is live (not `N/0`: the transaction is not ending)
);

CREATE FUNCTION phoenix_log_horizon_of(snap pg_snapshot, holders phoenix_xid_holder[], marked int[])
RETURNS xid8
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  RETURN least(
    pg_snapshot_xmax(snap),
    (SELECT min(x)
       FROM pg_snapshot_xip(snap) AS x
      WHERE NOT EXISTS (
        SELECT 1 FROM unnest(holders) AS h
         WHERE h.xid = x::xid AND h.running AND h.pid IS NOT NULL
           AND h.pid <> ALL (coalesce(marked, '{}')))));
END;
$$;

CREATE OR REPLACE FUNCTION phoenix_log_horizon() RETURNS xid8
-- PL/pgSQL keeps its plans for the session: an SQL function would be planned again on every call.
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  snap pg_snapshot := pg_current_snapshot();
  holders phoenix_xid_holder[];
  marked int[];
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(snap)) THEN
    RETURN pg_snapshot_xmax(snap);
  END IF;
  -- One read of pg_locks: a transaction's id and its mark are seen together.
  SELECT array_agg(ROW(l.transactionid, l.pid, split_part(l.virtualtransaction, '/', 2) <> '0')::phoenix_xid_holder)
           FILTER (WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted),
         array_agg(l.pid)
           FILTER (WHERE l.locktype = 'advisory' AND l.classid = 1347964504::oid
                     AND l.objid = (hashtext(current_schema() || ':append')::int8 & 4294967295)::oid
                     AND l.objsubid = 2)
    INTO holders, marked
    FROM pg_locks l
   WHERE l.locktype IN ('transactionid', 'advisory');
  RETURN phoenix_log_horizon_of(snap, holders, marked);
END;
$$;
