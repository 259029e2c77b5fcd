-- Demo dataset for deploy/examples/*.yaml: the tables the four design-document use cases query.
-- Loaded by `duckdb-kql serve --init tests/peers/demo.sql` (database `memory`); used by
-- tests/transform_examples.rs and by `adxexporter preview` when trying the examples locally.
--
-- Small and deterministic on purpose: every `.expected.prom` beside the examples is derived by hand
-- from these rows (the derivation is in each example's comments). All rows are on 2026-01-01 UTC
-- between 09:58 and 10:16. Values are exact binary fractions (.5, .25, .125 …) so averages are exact.
-- Each table also has rows just outside its example's preview window (one before the start, one exactly
-- at the end) that must NOT appear in the output: they check the `_startTime`/`_endTime` bounds.
-- DOUBLE (not DECIMAL) for measurements: duckdb-kql returns DECIMAL as Kusto `decimal`, DOUBLE as `real`.

-- Use case 1 (service-response-times.yaml), window 10:05:00 .. 10:06:00.
CREATE TABLE ServiceTelemetry (
    Timestamp      TIMESTAMP,
    ServiceName    VARCHAR,
    Environment    VARCHAR,
    ResponseTimeMs DOUBLE
);
INSERT INTO ServiceTelemetry VALUES
    ('2026-01-01 10:04:40', 'api-gateway',  'production',  999.0),  -- before the window
    ('2026-01-01 10:05:00', 'api-gateway',  'production',  240.5),
    ('2026-01-01 10:05:10', 'user-service', 'production',  180.25),
    ('2026-01-01 10:05:20', 'api-gateway',  'production',  250.25),
    ('2026-01-01 10:05:30', 'user-service', 'staging',     300.0),
    ('2026-01-01 10:05:40', 'api-gateway',  'production',  245.75),
    ('2026-01-01 10:05:50', 'user-service', 'production',  198.75),
    ('2026-01-01 10:06:00', 'api-gateway',  'production', 1000.0),  -- at the window end: excluded
    ('2026-01-01 10:07:00', 'user-service', 'staging',     500.0);  -- after the window

-- Use case 2 (customer-analytics.yaml), window 10:00:00 .. 10:15:00.
CREATE TABLE CustomerEvents (
    EventTime          TIMESTAMP,
    LocationId         VARCHAR,
    CustomerResourceId VARCHAR,
    ServiceTier        VARCHAR,
    SuccessRate        DOUBLE,
    SuccessfulRequests BIGINT,
    TotalRequests      BIGINT,
    LatencyMs          DOUBLE
);
INSERT INTO CustomerEvents VALUES
    ('2026-01-01 09:58:00',   'datacenter-01', 'customer-12345', 'Premium',  0.5,     1,    2, 999.0),  -- before
    ('2026-01-01 10:00:00',   'datacenter-01', 'customer-12345', 'Premium',  0.75,  750, 1000, 120.5),
    ('2026-01-01 10:03:30',   'datacenter-02', 'customer-67890', 'Standard', 0.5,    50,  100, 200.0),
    ('2026-01-01 10:05:00',   'datacenter-01', 'customer-12345', 'Premium',  1.0,  1000, 1000, 100.25),
    ('2026-01-01 10:07:15',   'datacenter-01', 'customer-99999', 'Basic',    1.0,    10,   10,  42.0),
    ('2026-01-01 10:10:00',   'datacenter-01', 'customer-12345', 'Premium',  0.875, 875, 1000, 110.0),
    ('2026-01-01 10:14:59.5', 'datacenter-02', 'customer-67890', 'Standard', 0.25,   25,  100, 300.5),
    ('2026-01-01 10:15:00',   'datacenter-02', 'customer-67890', 'Standard', 0.0,     0,  100, 999.0);  -- at the end

-- Use case 3 (infrastructure-monitoring.yaml), window 10:00:00 .. 10:00:30.
CREATE TABLE SystemMetrics (
    Timestamp      TIMESTAMP,
    NodeName       VARCHAR,
    ClusterName    VARCHAR,
    Region         VARCHAR,
    CpuUtilization DOUBLE
);
INSERT INTO SystemMetrics VALUES
    ('2026-01-01 09:59:50', 'node-a', 'aks-east', 'eastus', 99.0),  -- before
    ('2026-01-01 10:00:00', 'node-a', 'aks-east', 'eastus', 40.0),
    ('2026-01-01 10:00:05', 'node-b', 'aks-east', 'eastus', 70.25),
    ('2026-01-01 10:00:10', 'node-a', 'aks-east', 'eastus', 42.5),
    ('2026-01-01 10:00:15', 'node-c', 'aks-west', 'westus', 12.125),
    ('2026-01-01 10:00:20', 'node-a', 'aks-east', 'eastus', 45.0),
    ('2026-01-01 10:00:25', 'node-b', 'aks-east', 'eastus', NULL),  -- avg() ignores nulls
    ('2026-01-01 10:00:30', 'node-a', 'aks-east', 'eastus', 99.0);  -- at the end

-- Use case 4 (global-error-rates.yaml), window 10:00:00 .. 10:02:00. Three tables stand in for
-- `cluster('<region>-cluster').TelemetryDB.ErrorEvents`, which a single local engine cannot serve.
CREATE TABLE ErrorEventsEastus (
    Timestamp    TIMESTAMP,
    ClusterName  VARCHAR,
    ServiceName  VARCHAR,
    SuccessEvent VARCHAR
);
CREATE TABLE ErrorEventsWestus  AS SELECT * FROM ErrorEventsEastus WITH NO DATA;
CREATE TABLE ErrorEventsEurope  AS SELECT * FROM ErrorEventsEastus WITH NO DATA;
INSERT INTO ErrorEventsEastus VALUES
    ('2026-01-01 09:59:59', 'eastus-cluster', 'checkout', 'ok'),  -- before
    ('2026-01-01 10:00:10', 'eastus-cluster', 'checkout', 'ok'),
    ('2026-01-01 10:00:20', 'eastus-cluster', 'checkout', ''),
    ('2026-01-01 10:00:40', 'eastus-cluster', 'checkout', 'ok'),
    ('2026-01-01 10:00:50', 'eastus-cluster', 'checkout', ''),
    ('2026-01-01 10:01:30', 'eastus-cluster', 'checkout', 'ok'),
    ('2026-01-01 10:02:00', 'eastus-cluster', 'checkout', 'ok');  -- at the end
INSERT INTO ErrorEventsWestus VALUES
    ('2026-01-01 10:00:05', 'westus-cluster', 'checkout', 'ok'),
    ('2026-01-01 10:00:35', 'westus-cluster', 'checkout', NULL),
    ('2026-01-01 10:00:55', 'westus-cluster', 'checkout', 'ok');
INSERT INTO ErrorEventsEurope VALUES
    ('2026-01-01 10:01:00', 'europe-cluster', 'search', 'ok'),
    ('2026-01-01 10:01:10', 'europe-cluster', 'search', 'ok'),
    ('2026-01-01 10:01:20', 'europe-cluster', 'search', 'ok'),
    ('2026-01-01 10:01:40', 'europe-cluster', 'search', 'ok'),
    ('2026-01-01 10:01:50', 'europe-cluster', 'search', '');
