-- MLflow keeps its runs and model registry in a database of its own, beside the clickstream's.
CREATE DATABASE mlflow;
