--
-- Signing: HMAC-SHA256, lowercase hex, exactly as the documented
-- Python verify() computes it.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS lark_webhooks;
RESET client_min_messages;

-- RFC 4231, section 4: every HMAC-SHA256 test case.  Keys that are valid
-- text go through the text-secret overloads; the 0xaa keys are not UTF-8,
-- so they use the raw-key overload.
SELECT lark.sign('Hi There'::bytea, repeat(chr(11), 20))
       = 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7' AS rfc4231_case1;
SELECT lark.sign('what do ya want for nothing?', 'Jefe')
       = '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843' AS rfc4231_case2;
SELECT lark.sign(decode(repeat('dd', 50), 'hex'), decode(repeat('aa', 20), 'hex'))
       = '773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe' AS rfc4231_case3;
SELECT lark.sign(decode(repeat('cd', 50), 'hex'),
                 convert_from(decode('0102030405060708090a0b0c0d0e0f10111213141516171819', 'hex'), 'UTF8'))
       = '82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b' AS rfc4231_case4;
SELECT left(lark.sign('Test With Truncation', repeat(chr(12), 20)), 32)
       = 'a3b6167473100ee06e0c796c2955552b' AS rfc4231_case5;
SELECT lark.sign('Test Using Larger Than Block-Size Key - Hash Key First'::bytea,
                 decode(repeat('aa', 131), 'hex'))
       = '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54' AS rfc4231_case6;
SELECT lark.sign(convert_to('This is a test using a larger than block-size key and a larger '
                            'than block-size data. The key needs to be hashed before being '
                            'used by the HMAC algorithm.', 'UTF8'),
                 decode(repeat('aa', 131), 'hex'))
       = '9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2' AS rfc4231_case7;

-- The text overloads sign the UTF-8 bytes; both give the same answer.
SELECT lark.sign('héllo 🎉', 'whsec_k') = lark.sign(convert_to('héllo 🎉', 'UTF8'), 'whsec_k')
       AS text_is_utf8_bytes;
-- A non-ASCII secret is keyed by its UTF-8 bytes, too.
SELECT lark.sign('body', 'clé') = lark.sign('body'::bytea, convert_to('clé', 'UTF8'))
       AS secret_is_utf8_bytes;
SELECT lark.sign('body', 'secret') ~ '^[0-9a-f]{64}$' AS lowercase_hex;
SELECT lark.sign(NULL::text, 'secret') IS NULL AS null_body_gives_null;

-- verify(): true only for the exact lowercase digest.
SELECT lark.verify('payload', lark.sign('payload', 's3cret'), 's3cret') AS good;
SELECT lark.verify('payload'::bytea, lark.sign('payload'::bytea, 's3cret'), 's3cret') AS good_bytea;
SELECT lark.verify('payload!', lark.sign('payload', 's3cret'), 's3cret') AS other_body;
SELECT lark.verify('payload', lark.sign('payload', 's3cret'), 's3cret!') AS other_secret;
SELECT lark.verify('payload', upper(lark.sign('payload', 's3cret')), 's3cret') AS uppercase;
SELECT lark.verify('payload', lark.sign('payload', 's3cret') || ' ', 's3cret') AS trailing_space;
SELECT lark.verify('payload', left(lark.sign('payload', 's3cret'), 63), 's3cret') AS truncated;
SELECT lark.verify('payload', '', 's3cret') AS empty;
SELECT lark.verify('payload', NULL, 's3cret') AS null_signature;
SELECT lark.verify('payload', 'not hex at all', 's3cret') AS malformed;
SELECT lark.verify('payload', repeat('é', 64), 's3cret') AS non_ascii;
SELECT lark.verify(NULL::text, 'abc', 's3cret') AS null_body;
