-- Departments (inspection teams, township offices, district departments, practice stations)
-- and their API tokens, stored as SHA-256 hashes only.
CREATE TABLE departments (
    code    text PRIMARY KEY,
    name    text NOT NULL,
    name_en text NOT NULL DEFAULT '',
    kind    text NOT NULL,
    area    text NOT NULL,
    scopes  text[] NOT NULL
);
CREATE TABLE api_tokens (
    token_hash bytea PRIMARY KEY,
    department text NOT NULL REFERENCES departments (code),
    label      text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
