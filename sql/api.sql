--
-- The webhook API: create, update, pause, resume, rotate, delete, the
-- per-account limit, and who may do what.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS lark_webhooks;
RESET client_min_messages;
SET lark_webhooks.max_webhooks_per_account = 5;

-- create_webhook returns an id and a secret; duplicates in events collapse.
CREATE TEMP TABLE made AS
SELECT * FROM lark.create_webhook('acct_api', 'https://example.com/hooks/lark',
                                  ARRAY['workflow_execution.failure',
                                        'workflow_execution.success',
                                        'workflow_execution.failure'],
                                  'Warehouse loader');
SELECT webhook_id ~ '^wh_[0-9a-f]{24}$' AS id_format,
       signing_secret ~ '^whsec_[0-9a-f]{64}$' AS secret_format
  FROM made;
SELECT account_id, url, events, active, description, updated_at = created_at AS untouched
  FROM lark.webhooks WHERE id = (SELECT webhook_id FROM made);

-- The secret is stored for the worker, and is different for every webhook.
SELECT s.secret = m.signing_secret AS stored
  FROM lark.webhook_secrets s JOIN made m USING (webhook_id);
INSERT INTO made
SELECT * FROM lark.create_webhook('acct_api', 'http://example.com:8080/other',
                                  ARRAY['workflow_repair.success']);
SELECT count(DISTINCT signing_secret) AS distinct_secrets FROM made;

-- update_webhook: NULL keeps a field, an empty description clears it.
SELECT lark.update_webhook(id, events => ARRAY['workflow_generation.success'])
  FROM lark.webhooks WHERE url LIKE '%hooks/lark';
SELECT url, events, description FROM lark.webhooks WHERE url LIKE '%hooks/lark';
SELECT lark.update_webhook(id, url => 'https://example.org/new', description => '')
  FROM lark.webhooks WHERE url LIKE '%hooks/lark';
SELECT url, events, description, updated_at > created_at AS stamped
  FROM lark.webhooks WHERE url = 'https://example.org/new';

-- pause and resume toggle active and keep the configuration.
SELECT lark.pause_webhook(id) FROM lark.webhooks WHERE url = 'https://example.org/new';
SELECT lark.pause_webhook(id) FROM lark.webhooks WHERE url = 'https://example.org/new';
SELECT active, paused_at IS NOT NULL AS paused, url, events
  FROM lark.webhooks WHERE url = 'https://example.org/new';
SELECT lark.resume_webhook(id) FROM lark.webhooks WHERE url = 'https://example.org/new';
SELECT active, paused_at IS NULL AS resumed, url, events
  FROM lark.webhooks WHERE url = 'https://example.org/new';

-- rotate_secret: a new secret, shown once, stored in place of the old one.
CREATE TEMP TABLE rotated AS
SELECT w.id, lark.rotate_secret(w.id) AS secret, s.secret AS old_secret
  FROM lark.webhooks w JOIN lark.webhook_secrets s ON s.webhook_id = w.id
 WHERE w.url = 'https://example.org/new';
SELECT r.secret ~ '^whsec_[0-9a-f]{64}$' AS format, r.secret <> r.old_secret AS changed,
       s.secret = r.secret AS stored
  FROM rotated r JOIN lark.webhook_secrets s ON s.webhook_id = r.id;

-- At most five webhooks per account, paused ones included.
SELECT lark.pause_webhook(id) FROM lark.webhooks WHERE url = 'http://example.com:8080/other';
SELECT count(*) FROM lark.create_webhook('acct_api', 'https://example.com/3', ARRAY['workflow_repair.failure']);
SELECT count(*) FROM lark.create_webhook('acct_api', 'https://example.com/4', ARRAY['workflow_repair.failure']);
SELECT count(*) FROM lark.create_webhook('acct_api', 'https://example.com/5', ARRAY['workflow_repair.failure']);
\set SHOW_CONTEXT never
SELECT count(*) FROM lark.create_webhook('acct_api', 'https://example.com/6', ARRAY['workflow_repair.failure']);
SELECT count(*) AS webhooks FROM lark.webhooks WHERE account_id = 'acct_api';
-- Another account is not affected.
SELECT count(*) FROM lark.create_webhook('acct_other', 'https://example.com/6', ARRAY['workflow_repair.failure']);

-- delete_webhook: queued deliveries are cancelled, history stays.
INSERT INTO lark.workflows (id, account_id, name) VALUES ('wf_api', 'acct_api', 'API test');
INSERT INTO lark.workflow_repairs (id, workflow_id, status) VALUES ('rep_api', 'wf_api', 'failure');
SELECT w.url, d.status FROM lark.deliveries d JOIN lark.webhooks w ON w.id = d.webhook_id ORDER BY w.url;
SELECT lark.delete_webhook(id) FROM lark.webhooks WHERE url = 'https://example.com/3';
SELECT count(*) AS remaining FROM lark.webhooks WHERE url = 'https://example.com/3';
SELECT d.status, d.finished_at IS NOT NULL AS finished, d.last_error
  FROM lark.deliveries d
 WHERE NOT EXISTS (SELECT 1 FROM lark.webhooks w WHERE w.id = d.webhook_id);
-- The freed slot can be used again.
SELECT count(*) FROM lark.create_webhook('acct_api', 'https://example.com/7', ARRAY['workflow_repair.failure']);

-- A plain role cannot use the API until it is granted, and even then can
-- neither write the tables nor read a secret.
CREATE ROLE lark_plain_user;
GRANT lark_plain_user TO CURRENT_USER;
SET ROLE lark_plain_user;
SELECT count(*) FROM lark.create_webhook('acct_plain', 'https://example.com/p', ARRAY['workflow_execution.success']);
RESET ROLE;
GRANT EXECUTE ON FUNCTION lark.create_webhook(text, text, text[], text) TO lark_plain_user;
SET ROLE lark_plain_user;
SELECT count(*) FROM lark.create_webhook('acct_plain', 'https://example.com/p', ARRAY['workflow_execution.success']);
SELECT lark.rotate_secret('wh_anything');
SELECT secret FROM lark.webhook_secrets;
SELECT * FROM lark.webhooks;
INSERT INTO lark.webhooks (account_id, url, events) VALUES ('acct_plain', 'https://evil.example/', '{}');
UPDATE lark.deliveries SET status = 'succeeded';
DELETE FROM lark.events;
SELECT lark._wake_worker();
RESET ROLE;
SELECT count(*) AS plain_webhooks FROM lark.webhooks WHERE account_id = 'acct_plain';

-- The API functions run as the owner, with a search path nobody can hijack.
SELECT p.proname, p.prosecdef, p.proconfig
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'lark' AND p.proname IN ('create_webhook', 'update_webhook',
       'pause_webhook', 'resume_webhook', 'delete_webhook', 'rotate_secret')
 ORDER BY 1;

DROP OWNED BY lark_plain_user;
DROP ROLE lark_plain_user;
