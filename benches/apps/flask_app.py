"""Benchmark Flask app: one JSON endpoint, same for every server."""
from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/json")
def hello_json():
    return jsonify(message="Hello, World!", items=list(range(10)))
