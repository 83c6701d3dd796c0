-- pgTAP: every webhook function, given NULLs, empty strings, empty arrays,
-- 1 MB strings, unknown ids, invalid URLs and unknown event names, fails
-- with a clear error (an SQLSTATE of class 22, 42704 or 54000, a lowercase
-- message and a hint) and changes nothing.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SET LOCAL lark_webhooks.max_webhooks_per_account = 5;
SELECT webhook_id AS hook FROM lark.create_webhook('acct_bad', 'https://example.com/ok',
                                                   ARRAY['workflow_execution.success'], 'fine') \gset

CREATE TEMP TABLE calls (sql text);
INSERT INTO calls
SELECT format('SELECT lark.create_webhook(%s, %s, %s, %s)', bad.a, bad.u, bad.e, bad.d)
  FROM (VALUES ('''acct_bad2''', '''https://example.com/x''', 'ARRAY[''workflow_execution.success'']', 'NULL')) ok(a, u, e, d),
       LATERAL (VALUES
           ('NULL', ok.u, ok.e, ok.d), ('''''', ok.u, ok.e, ok.d), ('repeat(''a'', 1000000)', ok.u, ok.e, ok.d),
           (ok.a, 'NULL', ok.e, ok.d), (ok.a, '''''', ok.e, ok.d), (ok.a, '''not a url''', ok.e, ok.d),
           (ok.a, '''ftp://example.com/x''', ok.e, ok.d), (ok.a, '''https://'' || repeat(''h'', 1000000)', ok.e, ok.d),
           (ok.a, ok.u, 'NULL', ok.d), (ok.a, ok.u, '''{}''::text[]', ok.d), (ok.a, ok.u, 'ARRAY[NULL]::text[]', ok.d),
           (ok.a, ok.u, 'ARRAY[''''::text]', ok.d), (ok.a, ok.u, 'ARRAY[''bogus.event'']', ok.d),
           (ok.a, ok.u, 'ARRAY[repeat(''e'', 1000000)]', ok.d),
           (ok.a, ok.u, ok.e, 'repeat(''d'', 1000000)')
       ) bad(a, u, e, d);
INSERT INTO calls
SELECT format('SELECT lark.%s(%s)', f, id)
  FROM unnest(ARRAY['pause_webhook', 'resume_webhook', 'delete_webhook', 'rotate_secret', 'update_webhook']) f,
       unnest(ARRAY['NULL', '''''', '''wh_unknown''', 'repeat(''w'', 1000000)']) id;
INSERT INTO calls
SELECT format('SELECT lark.update_webhook(%L, %s)', :'hook', arg)
  FROM unnest(ARRAY['url => ''''', 'url => ''not a url''', 'url => ''https://u:p@example.com/''',
                    'url => repeat(''u'', 1000000)', 'events => ''{}''::text[]',
                    'events => ARRAY[''bogus'']', 'events => ARRAY[NULL]::text[]',
                    'description => repeat(''d'', 1000000)']) arg;

SELECT plan((SELECT count(*)::int * 4 FROM calls) + 2);

CREATE FUNCTION pg_temp.failure(sql text, OUT code text, OUT message text, OUT hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := 'none';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            hint = PG_EXCEPTION_HINT;
END $f$;

CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM lark.webhooks) AS hooks,
       (SELECT count(*) FROM lark.webhook_secrets) AS secrets,
       (SELECT string_agg(account_id || webhook_count, ',' ORDER BY account_id) FROM lark.accounts) AS counts,
       (SELECT md5(string_agg(w::text, ',' ORDER BY id)) FROM lark.webhooks w) AS hooks_md5,
       (SELECT md5(string_agg(s::text, ',' ORDER BY webhook_id)) FROM lark.webhook_secrets s) AS secrets_md5;

SELECT v.result
  FROM calls c, LATERAL pg_temp.failure(c.sql) f,
       LATERAL (VALUES
           (1, ok(f.code LIKE '22%' OR f.code IN ('42704', '54000'),
                  left(c.sql, 90) || ': fails with a user error (' || f.code || ')')),
           (2, ok(f.message = lower(left(f.message, 1)) || substr(f.message, 2) AND length(f.message) < 200,
                  left(c.sql, 90) || ': short lowercase message')),
           (3, ok(f.hint IS NOT NULL AND f.hint <> '', left(c.sql, 90) || ': with a hint')),
           (4, ok(f.message NOT LIKE '%whsec_%', left(c.sql, 90) || ': no secret in the message'))
       ) v(n, result);

SELECT is((SELECT row(hooks, secrets, counts, hooks_md5, secrets_md5)::text FROM before),
          (SELECT row((SELECT count(*) FROM lark.webhooks), (SELECT count(*) FROM lark.webhook_secrets),
                      (SELECT string_agg(account_id || webhook_count, ',' ORDER BY account_id) FROM lark.accounts),
                      (SELECT md5(string_agg(w::text, ',' ORDER BY id)) FROM lark.webhooks w),
                      (SELECT md5(string_agg(s::text, ',' ORDER BY webhook_id)) FROM lark.webhook_secrets s))::text),
          'nothing stored changed');
SELECT is((SELECT description FROM lark.webhooks WHERE id = :'hook'), 'fine', 'the good webhook kept its description');

SELECT * FROM finish();
ROLLBACK;
