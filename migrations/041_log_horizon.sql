-- Readers of the log take rows of transactions that can no longer change: below the horizon.
--
-- pg_snapshot_xmin(pg_current_snapshot()) is such a horizon, but it counts the running transactions
-- of every database in the cluster: a long transaction in a neighbouring database (a report, a bulk
-- load, a forgotten psql session) held every subscriber of this one back for as long as it ran. A
-- transaction of another database can write nothing here, so the horizon skips the ones that
-- pg_stat_activity shows in another database. Any in-progress transaction it cannot place (ended
-- since the snapshot, prepared, hidden) still holds the horizon back: wrongly holding back is lag,
-- wrongly letting go would be loss.
--
-- STABLE: it uses the calling statement's snapshot, the one that statement's rows are read with, so
-- every row below the horizon that will ever exist is visible to that statement.
CREATE FUNCTION phoenix_log_horizon() RETURNS xid8
LANGUAGE sql STABLE
AS $$
  SELECT least(
    pg_snapshot_xmax(pg_current_snapshot()),
    (SELECT min(x)
       FROM pg_snapshot_xip(pg_current_snapshot()) AS x
      WHERE NOT EXISTS (
        SELECT 1 FROM pg_stat_activity a
         WHERE a.backend_xid = x::xid
           AND a.datid <> (SELECT d.oid FROM pg_database d WHERE d.datname = current_database()))))
$$;
