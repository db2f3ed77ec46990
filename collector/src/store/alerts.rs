//! Alerts, suppressions and the detectors' checkpoint in the embedded store: the same
//! SQLite file as the events, through a connection of its own (WAL lets the detector
//! read batches and write alerts while the ingest commits).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{AlertQuery, AlertStore, StoreError};
use crate::alert::{Alert, AlertStatus, AlertType, Suppression};

pub struct SqliteAlerts {
    conn: Connection,
}

impl SqliteAlerts {
    /// Opens the alert tables of a store that [`super::SqliteStore::open`] created.
    pub fn open(path: &Path) -> Result<SqliteAlerts, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if v < 2 {
            return Err(StoreError::OldSchema(v, 2));
        }
        Ok(SqliteAlerts { conn })
    }
}

fn row_alert(body: String, status: String) -> Result<Alert, StoreError> {
    let mut a: Alert = serde_json::from_str(&body).map_err(StoreError::AlertJson)?;
    a.status = AlertStatus::parse(&status);
    Ok(a)
}

impl AlertStore for SqliteAlerts {
    fn batches_after(&self, cursor: i64, limit: usize) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, frame FROM batches WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let rows = stmt
            .query_map(params![cursor, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn last_batch(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM batches", [], |r| r.get(0))?)
    }

    fn save(
        &mut self,
        alerts: &[Alert],
        checkpoint: Option<(i64, &[u8])>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO alerts(id, type, severity, score, actor_id, endpoint, first_us, last_us, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(id) DO UPDATE SET severity = excluded.severity, score = excluded.score,
                   last_us = excluded.last_us, body = excluded.body",
            )?;
            for a in alerts {
                let body = serde_json::to_string(a).map_err(StoreError::AlertJson)?;
                up.execute(params![
                    a.id,
                    a.kind.name(),
                    a.severity.code(),
                    a.score,
                    a.actor_id,
                    a.endpoint,
                    a.first_seen_us,
                    a.last_seen_us,
                    body
                ])?;
            }
            if let Some((cursor, state)) = checkpoint {
                tx.execute(
                    "INSERT INTO detector(id, cursor, saved_us, state) VALUES (1, ?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET cursor = excluded.cursor,
                       saved_us = excluded.saved_us, state = excluded.state",
                    params![cursor, super::now_us(), state],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn checkpoint(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT cursor, state FROM detector WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    fn alerts(&self, q: &AlertQuery) -> Result<(Vec<Alert>, u64), StoreError> {
        let mut sql = String::from(" FROM alerts WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(s) = q.since_us {
            sql.push_str(" AND last_us >= ?");
            args.push(s.into());
        }
        if let Some(s) = q.min_severity {
            sql.push_str(" AND severity >= ?");
            args.push(s.code().into());
        }
        if let Some(t) = q.kind {
            sql.push_str(" AND type = ?");
            args.push(t.name().to_string().into());
        }
        if let Some(a) = &q.actor_id {
            sql.push_str(" AND (actor_id = ? OR json_extract(body, '$.actor.key') = ?)");
            args.push(a.clone().into());
            args.push(a.clone().into());
        }
        if let Some(s) = q.status {
            sql.push_str(" AND status = ?");
            args.push(s.name().to_string().into());
        }
        let total: i64 = self.conn.query_row(
            &format!("SELECT count(*){sql}"),
            rusqlite::params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(&format!(
            "SELECT body, status{sql} ORDER BY first_us DESC, id LIMIT {} OFFSET {}",
            q.limit.min(10_000),
            q.offset
        ))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(row_alert(r.get(0)?, r.get(1)?)?);
        }
        Ok((out, total as u64))
    }

    fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row("SELECT body, status FROM alerts WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(b, s)| row_alert(b, s)).transpose()
    }

    fn set_status(
        &mut self,
        id: &str,
        status: AlertStatus,
        suppression: Option<&Suppression>,
    ) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE alerts SET status = ?2 WHERE id = ?1",
            params![id, status.name()],
        )?;
        if n == 1
            && let Some(s) = suppression
        {
            tx.execute(
                "INSERT INTO suppressions(type, actor_id, endpoint, created_us, expires_us, alert_id, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    s.kind.name(),
                    s.actor_id,
                    s.endpoint,
                    s.created_us,
                    s.expires_us,
                    s.alert_id,
                    s.reason
                ],
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    fn reset_detection(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM detector", [])?;
        tx.execute("DELETE FROM alerts WHERE status = 'open'", [])?;
        tx.commit()?;
        Ok(())
    }

    fn suppressions(&self, now_us: i64) -> Result<Vec<Suppression>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, type, actor_id, endpoint, created_us, expires_us, alert_id, reason
             FROM suppressions WHERE expires_us > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([now_us], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, kind, actor_id, endpoint, created_us, expires_us, alert_id, reason) = r?;
            if let Some(kind) = AlertType::parse(&kind) {
                out.push(Suppression {
                    id,
                    kind,
                    actor_id,
                    endpoint,
                    created_us,
                    expires_us,
                    alert_id,
                    reason,
                });
            }
        }
        Ok(out)
    }
}
