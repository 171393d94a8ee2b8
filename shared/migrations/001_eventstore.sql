-- Event store: append-only events, per-stream versions, outbox rows, idempotency keys.

CREATE TABLE streams (
    stream_id text PRIMARY KEY,
    version   integer NOT NULL CHECK (version > 0)
);

CREATE TABLE events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    stream_id      text NOT NULL,
    stream_version integer NOT NULL,
    type           text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL,
    source         text NOT NULL,
    actor          text NOT NULL,
    grid_path      text NOT NULL,
    correlation_id uuid NOT NULL,
    causation_id   uuid,
    payload        jsonb NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_type_occurred ON events (type, occurred_at);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP USING ERRCODE = 'WM403';
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- Rows to publish. The relay marks rows sent instead of tracking a high-water mark, so a row
-- whose transaction commits after a later id is still found (no gap can be skipped).
CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   uuid NOT NULL,
    topic      text NOT NULL,
    key        text NOT NULL,
    value      bytea NOT NULL,
    headers    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

CREATE TABLE idempotency_keys (
    key        text PRIMARY KEY,
    event_ids  uuid[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One round trip per append: idempotency check, optimistic concurrency on every stream,
-- events and outbox rows, all in the caller's single statement. Streams in one call are distinct.
CREATE FUNCTION wenming_append(
    p_streams text[], p_expected integer[],
    p_event_ids uuid[], p_stream_ids text[], p_versions integer[], p_types text[],
    p_schema_versions integer[], p_occurred timestamptz[], p_recorded timestamptz[],
    p_sources text[], p_actors text[], p_grid_paths text[], p_correlation uuid[], p_causation uuid[],
    p_payloads jsonb[], p_topics text[], p_values bytea[], p_headers jsonb[], p_idempotency_key text
) RETURNS TABLE (event_id uuid, stream_id text, stream_version integer, "position" bigint, duplicate boolean)
LANGUAGE plpgsql AS $$
DECLARE
    n_ok integer;
    stored uuid[];
    stale text;
BEGIN
    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO idempotency_keys AS k (key, event_ids) VALUES (p_idempotency_key, p_event_ids)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT k.event_ids INTO stored FROM idempotency_keys k WHERE k.key = p_idempotency_key;
            RETURN QUERY SELECT e.event_id, e.stream_id, e.stream_version, e.position, true
                FROM events e WHERE e.event_id = ANY (stored) ORDER BY e.position;
            RETURN;
        END IF;
    END IF;

    WITH req AS (
        SELECT r.sid, r.expected, r.expected + count(*) OVER (PARTITION BY r.sid) AS newv
        FROM unnest(p_streams, p_expected) AS r (sid, expected)
        JOIN unnest(p_stream_ids) AS ev (sid) USING (sid)
    ), req1 AS (SELECT DISTINCT sid, expected, newv FROM req),
    ins AS (
        INSERT INTO streams AS s (stream_id, version)
        SELECT sid, newv FROM req1 WHERE expected = 0
        ON CONFLICT DO NOTHING RETURNING 1
    ), upd AS (
        UPDATE streams s SET version = req1.newv FROM req1
        WHERE s.stream_id = req1.sid AND req1.expected > 0 AND s.version = req1.expected
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM upd) INTO n_ok;

    IF n_ok <> cardinality(p_streams) THEN
        SELECT string_agg(format('%s expected %s, is %s', r.sid, r.expected, coalesce(s.version, 0)), '; ')
        INTO stale
        FROM unnest(p_streams, p_expected) AS r (sid, expected)
        LEFT JOIN streams s ON s.stream_id = r.sid
        WHERE coalesce(s.version, 0) <> r.expected;
        RAISE EXCEPTION 'wrong expected version' USING ERRCODE = 'WM409', DETAIL = coalesce(stale, 'concurrent append');
    END IF;

    RETURN QUERY
    WITH ev AS (
        INSERT INTO events AS e (event_id, stream_id, stream_version, type, schema_version, occurred_at,
                                 recorded_at, source, actor, grid_path, correlation_id, causation_id, payload)
        SELECT * FROM unnest(p_event_ids, p_stream_ids, p_versions, p_types, p_schema_versions, p_occurred,
                             p_recorded, p_sources, p_actors, p_grid_paths, p_correlation, p_causation, p_payloads)
        RETURNING e.event_id, e.stream_id, e.stream_version, e.position
    ), ob AS (
        INSERT INTO outbox (event_id, topic, key, value, headers)
        SELECT * FROM unnest(p_event_ids, p_topics, p_stream_ids, p_values, p_headers)
    )
    SELECT ev.event_id, ev.stream_id, ev.stream_version, ev.position, false FROM ev ORDER BY ev.position;
    PERFORM pg_notify('wenming_outbox', '');
END $$;
