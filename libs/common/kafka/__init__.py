"""Kafka helpers on confluent-kafka, split by concern: producing, consuming, transactions."""
