"""The floor for the ingestion benchmark: Flask on the same gunicorn settings, doing nothing."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/webhook")
def receive_webhook():
    request.get_data()
    return jsonify({"status": "ok"})


@app.get("/health/live")
def live():
    return jsonify({"status": "ok"})
