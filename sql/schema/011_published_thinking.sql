-- A source's own thinking for a reference (issue 24: the deepwriting and reer readers keep the
-- `<think>…</think>` before the answer instead of dropping it), on the document it came with and on
-- the query made from that document, so the search and the experiments can compare it with ours.
-- NULL when the source had none. Added to databases made before these columns existed.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS published_thinking VARCHAR;
ALTER TABLE queries ADD COLUMN IF NOT EXISTS published_thinking VARCHAR;
