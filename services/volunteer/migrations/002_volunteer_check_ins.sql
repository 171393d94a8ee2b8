-- Read model: volunteers checked in and not yet out, so the sweeper can close those past 24 h.
CREATE TABLE volunteer_open_check_ins (
    activity_id   uuid NOT NULL,
    volunteer_id  uuid NOT NULL,
    grid_path     text NOT NULL,
    checked_in_at timestamptz NOT NULL,
    PRIMARY KEY (activity_id, volunteer_id)
);
CREATE INDEX volunteer_open_check_ins_at ON volunteer_open_check_ins (checked_in_at);
