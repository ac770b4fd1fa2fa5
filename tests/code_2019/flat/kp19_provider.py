MODELS = []


def register(model):
    MODELS.append(type(model).__name__)
    return model
