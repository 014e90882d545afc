from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def trace_list(request: HttpRequest) -> HttpResponse:
    return render(request, "traces/list.html")
