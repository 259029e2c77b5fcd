-- Quickstart data for duckdb-kql: CPU samples of three hosts every 30 s from two hours before
-- start-up to two hours after, so every window adxexporter queries while the quickstart runs has
-- rows, and Prometheus (which accepts samples up to about an hour old) takes them.
-- Timestamps are UTC: make_timestamp(epoch_us(now())) avoids the session time zone.
CREATE TABLE Heartbeat AS
SELECT
    date_trunc('minute', make_timestamp(epoch_us(now()))) + to_minutes(m::INT) + to_seconds(s::INT) AS Timestamp,
    'host-' || h AS Host,
    CASE WHEN h = 3 THEN 'westus' ELSE 'eastus' END AS Region,
    (h * 10 + ((m + 1000) % 7) + s / 60.0)::DOUBLE AS CpuPercent
FROM range(-120, 120) t(m), range(0, 60, 30) u(s), range(1, 4) v(h);
