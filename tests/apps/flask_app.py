"""Flask app for corral's integration tests (needs the test venv with Flask)."""
import hashlib

from flask import Flask, Response, abort, jsonify, redirect, request, stream_with_context

app = Flask(__name__)


@app.get("/")
def index():
    return "flask ok"


@app.get("/query")
def query():
    return jsonify(
        args={k: request.args.getlist(k) for k in request.args},
        name=request.args.get("name"),
        n=request.args.get("n", type=int),
    )


@app.post("/form")
def form():
    return jsonify(
        form={k: request.form.getlist(k) for k in request.form},
        content_type=request.content_type,
    )


@app.post("/json")
def json_in():
    data = request.get_json()
    nums = data.get("nums", [])
    return jsonify(received=data, total=sum(nums), count=len(nums))


@app.post("/upload")
def upload():
    f = request.files.get("file")
    if f is None:
        abort(400, "no 'file' field in the upload")
    data = f.read()
    return jsonify(
        filename=f.filename,
        mimetype=f.mimetype,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        sum32=sum(data) & 0xFFFFFFFF,
        fields={k: request.form.get(k) for k in request.form},
    )


@app.get("/stream")
def stream():
    n = request.args.get("n", 5, type=int)

    def generate():
        for i in range(n):
            yield "line %d\n" % i

    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/redirect")
def go():
    return redirect("/target")


@app.get("/target")
def target():
    return "you made it"


@app.get("/missing")
def missing():
    abort(404)


application = app
