-- The health of each sending account (circuit state), shared by every process on the database.
CREATE TABLE account_states (
    account     TEXT PRIMARY KEY,
    circuit     TEXT NOT NULL,
    open_until  BIGINT,
    last_error  TEXT,
    updated_at  BIGINT NOT NULL
);
