-- runs_runnable indexed lease_expires_at, which every commit extends, so no commit could be a HOT
-- update: each one wrote index entries too. Claims filter the lease on the row instead (runnable
-- runs are few), and free space in each page lets the row's new version stay on its page.
DROP INDEX runs_runnable;
CREATE INDEX runs_runnable ON runs (status, created_at);
ALTER TABLE runs SET (fillfactor = 70);
